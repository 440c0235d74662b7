"""Write each chart's values.schema.json from its values.yaml: every key the chart reads, typed by its
default, and nothing else (``additionalProperties: false`` at every object level), so a misspelt
key fails `helm template` instead of being silently ignored. Constraints the defaults cannot show
(patterns, ranges, enums) and free-form maps (nodeSelector, annotations, ...) are listed below.

    python charts/build_schemas.py           # rewrite the schemas
    python charts/build_schemas.py --check   # exit 1 when a committed schema is stale (tests run this)
"""

from __future__ import annotations

import importlib.resources
import json
import sys
from pathlib import Path
from typing import Any

import yaml

CHARTS = Path(__file__).resolve().parent / "ml-platform"
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
FREE_OBJECT = {"type": "object"}  # Kubernetes structures (affinity, resources) validated by the API server
OBJECT_LIST = {"type": "array", "items": {"type": "object"}}
S3_URL = {"type": "string", "pattern": "^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$"}
PORT = {"type": "integer", "minimum": 1, "maximum": 65535}
ENGINE = {"enum": ["duckdb", "numpy", "spark"]}  # jobs/featurestore.py's engines (historical, features)
# `jobs features --start`: an ISO date or date-time, today / today-Nd or now / now-N{s,m,h,d}
# (jobs/featurestore.py:_when; tests/charts/test_optional_parts.py checks the two agree).
START = {
    "type": "string",
    "pattern": "^(today(-[0-9]+d)?|now(-[0-9]+[smhd])?|([0-9]{4}-[0-9]{2}-[0-9]{2}|[0-9]{8})"
    "([T ][0-9]{2}(:[0-9]{2}(:[0-9]{2}(\\.[0-9]+)?)?)?(Z|[+-][0-9]{2}:?[0-9]{2})?)?)$",
}
# A CronJob's timeZone is an IANA name the API server knows: those of the tz database the lock pins (tzdata),
# referenced from one definition per schema.
TIME_ZONES = sorted(importlib.resources.files("tzdata").joinpath("zones").read_text().split())
TIME_ZONE = {"$ref": "#/definitions/timeZone"}

# Keys by their last path element (anywhere) or by their dotted path from the chart's root.
BY_NAME: dict[str, dict[str, Any]] = {
    "nodeSelector": STRING_MAP,
    "annotations": STRING_MAP,
    "podAnnotations": STRING_MAP,
    "allowedNamespaceLabels": STRING_MAP,
    "affinity": FREE_OBJECT,
    "resources": FREE_OBJECT,
    "requests": FREE_OBJECT,
    "limits": FREE_OBJECT,
    "tolerations": OBJECT_LIST,
    "topologySpreadConstraints": {
        "type": "array",
        "items": {"type": "object", "required": ["maxSkew", "topologyKey", "whenUnsatisfiable"]},
    },
    "extraEnv": OBJECT_LIST,
    "imagePullSecrets": {"type": "array", "items": {"type": "string", "minLength": 1}},
    "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
    "registry": {"type": "string", "minLength": 1},
    "repository": {"type": "string", "minLength": 1},
    "cpuRepository": {"type": "string", "minLength": 1},
    "endpointUrl": {"type": "string", "pattern": "^(|https?://.+)$"},
    "existingSecret": {"type": "string"},
    "nameOverride": {"type": "string"},
    "fullnameOverride": {"type": "string", "maxLength": 63},
    "schedule": {"type": "string", "minLength": 9},
    "minReplicas": {"type": "integer", "minimum": 1},
    "maxReplicas": {"type": "integer", "minimum": 1},
    "replicaCount": {"type": "integer", "minimum": 0},
    "workers": {"type": "integer", "minimum": 1},
    "minAvailable": {"type": ["integer", "string"]},
    "targetCPUUtilizationPercentage": {"type": "integer", "minimum": 1, "maximum": 100},
    "targetAverageValue": {"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?[mkMG]?$"},
    "port": PORT,
    "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
    "preStopSleepSeconds": {"type": "integer", "minimum": 0},
    "terminationGracePeriodSeconds": {"type": "integer", "minimum": 1},
    "size": {"type": "string", "pattern": "^[0-9]+(Ki|Mi|Gi|Ti)$"},
    "storageClass": {"type": "string"},
    "timeZone": TIME_ZONE,
    "concurrencyPolicy": {"enum": ["Allow", "Forbid", "Replace"]},
    "kedaNamespace": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
}
BY_PATH: dict[str, dict[str, Any]] = {
    "stream.shards": {"type": "integer", "minimum": 1, "maximum": 1024},
    "model": {"type": "string", "pattern": "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"},  # the stream's model name
    "historical.engine": ENGINE,
    "featureJob.engine": ENGINE,
    "featureJob.start": START,
    "featureJob.users": {"type": "integer", "minimum": 1},
    "featureJob.days": {"type": "integer", "minimum": 1},
    # The generated Secret's password, also in the redis:// URL: characters a URL's user info takes as is.
    "redis.password": {"type": "string", "pattern": "^([A-Za-z0-9._~-]{16,})?$"},
    "autoscaling.keda.addressKey": {"type": "string", "minLength": 1},
    "streamDecisions.shards": {"type": "integer", "minimum": 1, "maximum": 1024},
    "driftMonitoring.servedLog.url": {"type": "string", "pattern": "^(|s3://.+|/.+)$"},
    "driftMonitoring.servedLog.sampleRate": {"type": "number", "minimum": 0, "maximum": 1},
    "driftMonitoring.labelsUrl": {"type": "string", "pattern": "^(|s3://.+|/.+)$"},
    "driftMonitoring.offlineUrl": {"type": "string", "pattern": "^(s3://|/).+"},
    "windows": {"type": "string", "pattern": "^[1-9][0-9]*[smhd](,[1-9][0-9]*[smhd])*$"},
    "metricsPort": PORT,
    "batchSize": {"type": "integer", "minimum": 1, "maximum": 10000},
    "maxDeliveries": {"type": "integer", "minimum": 1},
    "claimIdleMs": {"type": "integer", "minimum": 100},
    "shardLeaseMs": {"type": "integer", "minimum": 200},
    "global.s3.region": {"type": "string", "minLength": 1},
    "global.networkPolicy.monitoringNamespace": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
    "bootstrap.users": {"type": "integer", "minimum": 1},
    "bootstrap.days": {"type": "integer", "minimum": 2},
    "modelStore.url": {"type": "string", "pattern": "^(s3://|/|file://).+"},
    "modelStore.pollIntervalSeconds": {"type": "number", "exclusiveMinimum": 0},
    "batching.maxBatchSize": {"type": "integer", "minimum": 1, "maximum": 100000},
    "batching.maxWaitMs": {"type": "number", "minimum": 0, "maximum": 1000},
    "engine.type": {"enum": ["onnxruntime", "sklearn", "edge-bundle"]},
    "engine.edgeBundles": {"type": "string", "pattern": "^(|s3://.+|/.+)$"},
    "engine.intraOpThreads": {"type": "integer", "minimum": 1, "maximum": 64},
    "engine.interOpThreads": {"type": "integer", "minimum": 1, "maximum": 64},
    "onlineFeatures.timeoutMs": {"type": "number", "exclusiveMinimum": 0},
    "onlineFeatures.missingEntityPolicy": {"enum": ["error", "zeros"]},
    "onlineFeatures.repo": {"type": "string", "pattern": "^[A-Za-z_][\\w.]*:[A-Za-z_]\\w*$"},
    "logLevel": {"enum": ["DEBUG", "INFO", "WARNING", "ERROR"]},
    "service.type": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
    "gracefulTimeoutSeconds": {"type": "integer", "minimum": 1},
    "prometheusRule.errorRatePercent": {"type": "number", "exclusiveMinimum": 0},
    "prometheusRule.p99LatencySeconds": {"type": "number", "exclusiveMinimum": 0},
    "repo": {"type": "string", "pattern": "^[A-Za-z_][\\w.]*:[A-Za-z_]\\w*$"},
    "offline.url": S3_URL | {"pattern": "^(s3://|/).+"},
    "redis.image": {"type": "string", "minLength": 1},
    "materialize.view": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"},
    "materialize.lookbackMinutes": {"type": "number", "minimum": 0},
    "materialize.shards": {"type": "integer", "minimum": 1, "maximum": 64},
    "materialize.startingDeadlineSeconds": {"type": "integer", "minimum": 10},
    "materialize.activeDeadlineSeconds": {"type": "integer", "minimum": 60},
    "materialize.backoffLimit": {"type": "integer", "minimum": 0},
    "materialize.pushgatewayUrl": {"type": "string", "pattern": "^(|https?://.+)$"},
    "featureServer.readTimeoutMs": {"type": "number", "exclusiveMinimum": 0},
    "featureServer.maxEntities": {"type": "integer", "minimum": 1},
    "prometheusRule.stalenessSeconds": {"type": "integer", "minimum": 60},
    "gpu.count": {"type": "integer", "minimum": 1},
    "modelRepository.url": S3_URL,
    "modelRepository.modelName": {"type": "string", "minLength": 1},
    "preprocess.tritonTimeoutMs": {"type": "number", "exclusiveMinimum": 0},
    "preprocess.maxImageBytes": {"type": "integer", "minimum": 1024},
    "prometheusRule.queueTimeMicroseconds": {"type": "integer", "minimum": 1},
    "driftMonitoring.models": {
        "type": "array",
        "items": {"type": "string", "pattern": "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"},
    },
    "driftMonitoring.windows": {
        "type": "array",
        "minItems": 1,
        "items": {"type": "string", "pattern": "^[0-9]+[smhdw]$"},
    },
    "driftMonitoring.thresholds": FREE_OBJECT,
    "driftMonitoring.prometheusUrl": {"type": "string", "pattern": "^(|https?://.+)$"},
    "driftMonitoring.pushgatewayUrl": {"type": "string", "pattern": "^(|https?://.+)$"},
    "driftMonitoring.schemaViolationShare": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
}
# The umbrella validates only its own keys of a subchart's section; the subchart's schema the rest.
SUBCHARTS = ("predict", "featurestore", "multimodal", "stream")


def schema_for(value: Any, path: str) -> dict[str, Any]:
    name = path.rsplit(".", 1)[-1]
    if path in BY_PATH:
        return dict(BY_PATH[path])
    if name in BY_NAME:
        return dict(BY_NAME[name])
    if isinstance(value, bool):
        return {"type": "boolean"}
    if isinstance(value, int):
        return {"type": "integer"}
    if isinstance(value, float):
        return {"type": "number"}
    if isinstance(value, str):
        return {"type": "string"}
    if isinstance(value, list):
        return {"type": "array"}
    if isinstance(value, dict):
        return {
            "type": "object",
            "additionalProperties": False,
            "properties": {k: schema_for(v, f"{path}.{k}".lstrip(".")) for k, v in value.items()},
        }
    raise TypeError(f"{path}: no schema for {value!r}")


def build(chart: Path, umbrella_global: dict[str, Any]) -> dict[str, Any]:
    values = yaml.safe_load((chart / "values.yaml").read_text())
    title = f"{chart.name} values"
    if chart == CHARTS:
        schema = schema_for(values, "")
        # Helm's section for the library chart, which has no values: only the globals Helm copies into it.
        schema["properties"]["common"] = {
            "type": "object",
            "additionalProperties": False,
            "properties": {"global": {"type": "object"}},
        }
        for sub in SUBCHARTS:
            # enabled only: the rest of the section is the subchart's, checked by its own schema
            schema["properties"][sub] = {
                "type": "object",
                "required": ["enabled"],
                "properties": {"enabled": {"type": "boolean"}},
            }
    else:
        # global is the umbrella's: the same schema, so a standalone install is checked as strictly
        values["global"] = umbrella_global
        schema = schema_for(values, "")
        schema["properties"]["enabled"] = {"type": "boolean"}  # the umbrella's condition, passed down
    out = {"$schema": "https://json-schema.org/draft-07/schema#", "title": title, **schema}
    if '"$ref": "#/definitions/timeZone"' in json.dumps(schema):
        out["definitions"] = {"timeZone": {"type": "string", "enum": TIME_ZONES}}
    return out


def main() -> int:
    check = "--check" in sys.argv
    umbrella_global = yaml.safe_load((CHARTS / "values.yaml").read_text())["global"]
    stale = []
    for chart in [CHARTS, *(CHARTS / "charts" / s for s in SUBCHARTS)]:
        text = json.dumps(build(chart, umbrella_global), indent=2) + "\n"
        target = chart / "values.schema.json"
        if check:
            if not target.exists() or target.read_text() != text:
                stale.append(str(target))
        else:
            target.write_text(text)
    if stale:
        print("stale (run python charts/build_schemas.py):", *stale, sep="\n  ")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
