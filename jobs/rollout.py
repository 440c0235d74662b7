"""``python -m jobs rollout``: roll a Deployment and wait until it converges, with the kubernetes client.

Used after a training Job when pods should restart on a new model (for example a Deployment that
pins PREDICT_MODELS, or after changing the store's URL): it stamps the pod template with an
annotation, which Kubernetes turns into a rolling update (maxUnavailable 0 + preStop: nothing is
dropped), then watches the Deployment's status until every replica is updated and available.
Idempotent: the same --reason on a converged Deployment changes nothing. Runs in-cluster with the
chart's least-privilege Role (get/patch on that one Deployment), or with a kubeconfig outside.
"""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jobs.settings import JobSettings

ANNOTATION = "ml-platform.io/rollout-reason"


class RolloutError(Exception):
    """The Deployment cannot be rolled or did not converge; the message says why."""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], settings: JobSettings) -> None:
    p = sub.add_parser("rollout", help="rolling-restart a Deployment (e.g. onto a new model) and wait for it")
    p.set_defaults(handler=lambda args, _settings: run(args))
    p.add_argument("--deployment", required=True)
    p.add_argument("--namespace", default=settings.pod_namespace, help="(env POD_NAMESPACE)")
    p.add_argument("--reason", required=True, help="recorded on the pod template, e.g. fraud@20261129T0100")
    p.add_argument("--timeout-seconds", type=float, default=600.0)


def _api() -> Any:
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        try:
            config.load_kube_config()
        except (config.ConfigException, OSError) as exc:
            raise RolloutError(f"no Kubernetes configuration (in-cluster or kubeconfig): {exc}") from None
    return client.AppsV1Api()


def converged(dep: Any) -> bool:
    spec, status = dep.spec, dep.status
    want = spec.replicas if spec.replicas is not None else 1
    return bool(
        (status.observed_generation or 0) >= (dep.metadata.generation or 0)
        and (status.updated_replicas or 0) == want
        and (status.available_replicas or 0) == want
        and (status.replicas or 0) == want  # old pods gone
    )


def run(args: argparse.Namespace, api: Any = None) -> dict[str, Any]:
    from kubernetes.client.exceptions import ApiException

    api = api or _api()
    name, ns = args.deployment, args.namespace
    try:
        dep = api.read_namespaced_deployment(name, ns)
        current = (dep.spec.template.metadata.annotations or {}).get(ANNOTATION)
        patched = current != args.reason
        if patched:
            body = {"spec": {"template": {"metadata": {"annotations": {ANNOTATION: args.reason}}}}}
            dep = api.patch_namespaced_deployment(name, ns, body)
        deadline = time.monotonic() + args.timeout_seconds
        while True:
            dep = api.read_namespaced_deployment_status(name, ns)
            if converged(dep):
                break
            if time.monotonic() > deadline:
                s = dep.status
                raise RolloutError(
                    f"deployment {ns}/{name} did not converge in {args.timeout_seconds:.0f} s: "
                    f"{s.updated_replicas or 0} updated, {s.available_replicas or 0} available of {dep.spec.replicas}"
                )
            time.sleep(1.0)
    except ApiException as exc:
        raise RolloutError(f"deployment {ns}/{name}: Kubernetes API answered {exc.status} {exc.reason}") from None
    return {
        "deployment": f"{ns}/{name}",
        "reason": args.reason,
        "patched": patched,
        "replicas": dep.status.available_replicas or 0,
        "generation": dep.metadata.generation,
    }
