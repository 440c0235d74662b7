{{/* Triton's S3 syntax for a custom endpoint is s3://host:port/bucket/path */}}
{{- define "multimodal.tritonRepository" -}}
{{- $url := .Values.modelRepository.url -}}
{{- with .Values.global.s3.endpointUrl -}}
{{- printf "s3://%s/%s" (regexReplaceAll "^https?://" . "") (trimPrefix "s3://" $url) }}
{{- else -}}
{{- $url }}
{{- end }}
{{- end }}

{{/* GPU: the NGC-based image; CPU fallback: the slim triton-cpu image. Same tritonserver flags. */}}
{{- define "multimodal.tritonImage" -}}
{{- $t := .Values.triton.image -}}
{{- $repo := ternary $t.repository $t.cpuRepository .Values.gpu.enabled -}}
{{- include "common.image" (dict "root" . "image" (dict "repository" $repo "tag" $t.tag)) }}
{{- end }}
