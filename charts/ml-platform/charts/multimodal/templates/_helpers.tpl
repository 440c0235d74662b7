{{- define "multimodal.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "multimodal.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ml-platform
{{- end }}

{{- define "multimodal.selectorLabels" -}}
app.kubernetes.io/name: {{ .component }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end }}

{{- define "multimodal.image" -}}
{{- $g := .root.Values.global.image -}}
{{- printf "%s/%s:%s" $g.registry .image.repository (default (default .root.Chart.AppVersion $g.tag) .image.tag) }}
{{- end }}

{{/* Triton's S3 syntax for a custom endpoint is s3://host:port/bucket/path */}}
{{- define "multimodal.tritonRepository" -}}
{{- $url := .Values.modelRepository.url -}}
{{- with .Values.global.s3.endpointUrl -}}
{{- printf "s3://%s/%s" (regexReplaceAll "^https?://" . "") (trimPrefix "s3://" $url) }}
{{- else -}}
{{- $url }}
{{- end }}
{{- end }}

{{- define "multimodal.awsEnv" -}}
- name: AWS_DEFAULT_REGION
  value: {{ .Values.global.s3.region | quote }}
{{- end }}

{{- define "multimodal.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end }}

{{- define "multimodal.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end }}
