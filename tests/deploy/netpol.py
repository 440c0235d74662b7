"""NetworkPolicy semantics, as a CNI that enforces them decides, for rendered policies (ingress only: the chart
renders no egress rules). A connection from a pod (namespace, labels) to a pod (namespace, labels, container
ports) on a port is allowed when no policy selects the target for Ingress, or when some ingress rule of a
policy selecting it matches both the port and the peer.

Namespaces carry the label kubernetes.io/metadata.name (Kubernetes sets it on every namespace), which is the
only namespace label the chart selects on; selectors with matchExpressions are refused, as the chart has none."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

NAME_LABEL = "kubernetes.io/metadata.name"


@dataclass(frozen=True)
class Peer:
    namespace: str
    labels: dict[str, str]
    ports: dict[str, int] = field(default_factory=dict)  # container port name -> number (targets only)

    @property
    def namespace_labels(self) -> dict[str, str]:
        return {NAME_LABEL: self.namespace}


def _matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    if not selector:
        return True  # {} selects everything
    assert "matchExpressions" not in selector, f"matchExpressions are not evaluated here: {selector}"
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def _peer_matches(peer: dict[str, Any], policy_namespace: str, source: Peer) -> bool:
    assert "ipBlock" not in peer, f"ipBlock peers are not evaluated here: {peer}"
    if "namespaceSelector" in peer:
        if not _matches(peer["namespaceSelector"], source.namespace_labels):
            return False
    elif source.namespace != policy_namespace:
        return False  # a podSelector alone means the policy's own namespace
    return _matches(peer.get("podSelector"), source.labels)


def _port_matches(rule_port: dict[str, Any], port: int, target: Peer) -> bool:
    if rule_port.get("protocol", "TCP") != "TCP":
        return False
    wanted = rule_port.get("port")
    if wanted is None:
        return True
    if isinstance(wanted, str):
        return target.ports.get(wanted) == port
    return int(wanted) <= port <= int(rule_port.get("endPort", wanted))


def allowed(policies: list[dict[str, Any]], source: Peer, target: Peer, port: int, default_ns: str) -> bool:
    selecting = [
        p
        for p in policies
        if p["metadata"].get("namespace", default_ns) == target.namespace
        and "Ingress" in (p["spec"].get("policyTypes") or ["Ingress"])
        and _matches(p["spec"].get("podSelector"), target.labels)
    ]
    if not selecting:
        return True
    for p in selecting:
        ns = p["metadata"].get("namespace", default_ns)
        for rule in p["spec"].get("ingress") or []:
            ports_ok = not rule.get("ports") or any(_port_matches(rp, port, target) for rp in rule["ports"])
            peers_ok = "from" not in rule or not rule["from"] or any(_peer_matches(f, ns, source) for f in rule["from"])
            if ports_ok and peers_ok:
                return True
    return False
