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
