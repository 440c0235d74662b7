{{/*
Names. Every chart calls these with its own context, so nameOverride and fullnameOverride of that
chart apply to every resource it renders.
*/}}
{{- define "common.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "common.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "common.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* Name of one component of a chart: dict "root" . "component" "redis" -> <fullname>-redis */}}
{{- define "common.componentName" -}}
{{- printf "%s-%s" (include "common.fullname" .root) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The ServiceAccount a chart's pods run as: its own when serviceAccount.create, else the named one */}}
{{- define "common.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "common.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}
