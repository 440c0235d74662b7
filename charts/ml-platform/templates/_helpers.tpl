{{/* The umbrella's own resources (bootstrap Job, dashboards) are named after the release. */}}
{{- define "ml-platform.fullname" -}}
{{- default .Release.Name .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ml-platform.bootstrap.serviceAccountName" -}}
{{- if .Values.bootstrap.serviceAccount.create }}
{{- default (printf "%s-bootstrap" (include "ml-platform.fullname" .)) .Values.bootstrap.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.bootstrap.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* A subchart's resource name as that chart computes it (common.fullname), from the umbrella's values */}}
{{- define "ml-platform.subchartName" -}}
{{- $v := index .root.Values .chart -}}
{{- $full := $v.fullnameOverride | default (printf "%s-%s" .root.Release.Name ($v.nameOverride | default .chart)) | trunc 63 | trimSuffix "-" -}}
{{- if .component }}{{ printf "%s-%s" $full .component | trunc 63 | trimSuffix "-" }}{{ else }}{{ $full }}{{ end }}
{{- end }}
