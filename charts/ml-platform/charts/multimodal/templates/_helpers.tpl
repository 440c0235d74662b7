{{/*
Triton's S3 syntax for a custom endpoint: s3://[https://]host:port/bucket/path. Triton speaks plain HTTP
unless the host carries https://, and it needs the port: an https endpoint keeps its scheme (the export job
and every other client use https there too), and an endpoint without a port gets its scheme's (443, 80).
*/}}
{{- define "multimodal.tritonRepository" -}}
{{- $url := .Values.modelRepository.url -}}
{{- with .Values.global.s3.endpointUrl -}}
{{- $https := hasPrefix "https://" . -}}
{{- $host := regexReplaceAll "^https?://" . "" | trimSuffix "/" -}}
{{- if not (regexMatch ":[0-9]+$" $host) -}}
{{- $host = printf "%s:%s" $host (ternary "443" "80" $https) -}}
{{- end -}}
{{- printf "s3://%s%s/%s" (ternary "https://" "" $https) $host (trimPrefix "s3://" $url) }}
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
