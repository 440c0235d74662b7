{{/* Selector labels, kept to two: dict "root" . "component" "name" (component empty: the chart's name) */}}
{{- define "common.selectorLabels" -}}
app.kubernetes.io/name: {{ default (include "common.name" .root) .component }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end }}

{{- define "common.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{ include "common.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: ml-platform
{{- end }}
