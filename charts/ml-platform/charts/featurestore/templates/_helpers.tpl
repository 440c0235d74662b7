{{/* Environment shared by the materializer and the feature server */}}
{{- define "featurestore.env" -}}
- name: FEATURES_REPO
  value: {{ .Values.repo | quote }}
- name: FEATURES_OFFLINE_URL
  value: {{ .Values.offline.url | quote }}
{{- with .Values.global.s3.endpointUrl }}
- name: AWS_ENDPOINT_URL_S3
  value: {{ . | quote }}
{{- end }}
- name: AWS_DEFAULT_REGION
  value: {{ .Values.global.s3.region | quote }}
{{- if not (or .Values.redis.enabled .Values.global.redis.existingSecret) }}
{{- fail "featurestore: redis.enabled=false needs global.redis.existingSecret, a Secret with key redis-url (e.g. the ElastiCache URL)" }}
{{- end }}
{{ include "common.redis.env" (dict "root" . "prefix" "FEATURES_REDIS") }}
{{- end }}
