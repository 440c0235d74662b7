{{- define "featurestore.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "featurestore.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ml-platform
{{- end }}

{{/* Selector labels of one component: name + instance */}}
{{- define "featurestore.selectorLabels" -}}
app.kubernetes.io/name: {{ .component }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end }}

{{- define "featurestore.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "featurestore.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "featurestore.image" -}}
{{- $g := .root.Values.global.image -}}
{{- printf "%s/%s:%s" $g.registry .image.repository (default (default .root.Chart.AppVersion $g.tag) .image.tag) }}
{{- end }}

{{- define "featurestore.redisHost" -}}
{{- printf "%s-redis" (include "featurestore.fullname" .) }}
{{- end }}

{{/* Environment shared by the materializer and the feature server */}}
{{- define "featurestore.env" -}}
- name: FEATURES_REPO
  value: {{ .Values.repo | quote }}
- name: FEATURES_OFFLINE_URL
  value: {{ .Values.offline.url | quote }}
{{- with .Values.global.s3.endpointUrl }}
- name: FEATURES_S3_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
- name: FEATURES_S3_REGION
  value: {{ .Values.global.s3.region | quote }}
- name: AWS_DEFAULT_REGION
  value: {{ .Values.global.s3.region | quote }}
{{- if .Values.redis.enabled }}
- name: FEATURES_REDIS_URL
  value: {{ printf "redis://%s:6379/0" (include "featurestore.redisHost" .) | quote }}
{{- else if .Values.redis.existingSecret }}
- name: FEATURES_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.existingSecret }}
      key: url
{{- else }}
- name: FEATURES_REDIS_URL
  value: {{ required "featurestore: set redis.enabled, redis.existingSecret or redis.externalUrl" .Values.redis.externalUrl | quote }}
{{- end }}
- name: FEATURES_REDIS_CLUSTER
  value: {{ .Values.redis.cluster | quote }}
{{- end }}

{{- define "featurestore.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end }}

{{- define "featurestore.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end }}
