{{/*
Redis: every client (feature server, materializer, bootstrap, prediction service) reads the URL,
password included, from one Secret (key redis-url): the featurestore chart's generated
<release>-redis, or global.redis.existingSecret (ElastiCache). The cluster flag is global.redis.cluster.
*/}}
{{- define "common.redis.secretName" -}}
{{- default (printf "%s-redis" .Release.Name) .Values.global.redis.existingSecret }}
{{- end }}

{{/* dict "root" . "prefix" "FEATURES_REDIS" -> FEATURES_REDIS_URL, FEATURES_REDIS_CLUSTER */}}
{{- define "common.redis.env" -}}
- name: {{ .prefix }}_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "common.redis.secretName" .root }}
      key: redis-url
- name: {{ .prefix }}_CLUSTER
  value: {{ .root.Values.global.redis.cluster | quote }}
{{- end }}

{{/* S3 keys from global.s3.existingSecret (kind); nothing with IRSA (EKS) */}}
{{- define "common.s3.envFrom" -}}
{{- with .Values.global.s3.existingSecret }}
envFrom:
  - secretRef:
      name: {{ . }}
{{- end }}
{{- end }}

{{/* The Secret holding the model-signing key (key hmac-key): predict verifies, every publisher signs */}}
{{- define "common.modelSigning.env" -}}
{{- with .secret }}
- name: {{ $.name }}
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: hmac-key
{{- end }}
{{- end }}

{{/* Ingress from the monitoring namespace (Prometheus) on the metrics port: dict "root" . "port" "http" */}}
{{- define "common.networkPolicy.monitoringPeer" -}}
- from:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: {{ .root.Values.global.networkPolicy.monitoringNamespace }}
  ports:
    - port: {{ .port }}
      protocol: TCP
{{- end }}

{{/* Is the Prometheus Operator's API served? (a plain cluster has no ServiceMonitor kind) */}}
{{- define "common.monitoringApi" -}}
{{- if .Capabilities.APIVersions.Has "monitoring.coreos.com/v1" }}true{{ end }}
{{- end }}
