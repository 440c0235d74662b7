{{/*
A number as a setting's text, never in e-notation: Helm reads every YAML number as a float64, and Go prints
one of a million or more as 1e+06 (a reader that wants plain decimals refuses it; ours parse it, but the
rendered value should say what the user wrote). Integral values print as integers, others in plain decimals.
*/}}
{{- define "common.number" -}}
{{- $f := float64 . -}}
{{- if eq $f (float64 (int64 $f)) -}}
{{- int64 $f -}}
{{- else if or (ge $f 1000000.0) (le $f -1000000.0) -}}
{{- printf "%f" $f | trimSuffix "0" | trimSuffix "0" | trimSuffix "0" | trimSuffix "0" | trimSuffix "0" -}}
{{- else -}}
{{- $f -}}
{{- end -}}
{{- end }}
