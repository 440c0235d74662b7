{{- define "predict.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "predict.fullname" -}}
{{- printf "%s-%s" .Release.Name (include "predict.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "predict.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "predict.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ml-platform
{{- end }}

{{- define "predict.selectorLabels" -}}
app.kubernetes.io/name: {{ include "predict.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "predict.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "predict.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "predict.image" -}}
{{- $g := .Values.global.image -}}
{{- printf "%s/%s:%s" $g.registry .Values.image.repository (default (default .Chart.AppVersion $g.tag) .Values.image.tag) }}
{{- end }}

{{- define "predict.redisUrl" -}}
{{- $fs := .Values.global.featureStore | default dict -}}
{{- if .Values.onlineFeatures.redisUrl }}
{{- .Values.onlineFeatures.redisUrl }}
{{- else if $fs.redisUrl }}
{{- $fs.redisUrl }}
{{- else if $fs.inChartRedis }}
{{- printf "redis://%s-featurestore-redis:6379/0" .Release.Name }}
{{- end }}
{{- end }}
