{{/*
nodeSelector, tolerations, affinity and topologySpreadConstraints of one workload:
dict "root" . "values" <component values> "component" <name>. A spread constraint without a
labelSelector gets the workload's selector labels, so values only name the topology key.
*/}}
{{- define "common.scheduling" -}}
{{- $v := .values -}}
{{- with $v.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if $v.topologySpreadConstraints }}
{{- $selector := include "common.selectorLabels" (dict "root" .root "component" .component) | fromYaml }}
topologySpreadConstraints:
{{- range $v.topologySpreadConstraints }}
  - {{- toYaml (merge (deepCopy .) (dict "labelSelector" (dict "matchLabels" $selector))) | nindent 4 }}
{{- end }}
{{- end }}
{{- end }}
