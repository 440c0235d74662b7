{{/*
One of our images: dict "root" . "image" (dict "repository" "predict" "tag" "").
<global.image.registry>/<repository>:<tag>, the tag defaulting to global.image.tag, then appVersion.
*/}}
{{- define "common.image" -}}
{{- $g := .root.Values.global.image -}}
{{- $registry := required "global.image.registry: set the registry your images are in (`make images` builds localhost/ml-platform/<name>:dev)" $g.registry -}}
{{- printf "%s/%s:%s" $registry .image.repository (default (default .root.Chart.AppVersion $g.tag) .image.tag) }}
{{- end }}

{{- define "common.imagePullSecrets" -}}
{{- with .Values.global.imagePullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end }}
