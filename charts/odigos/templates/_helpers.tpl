{{/* Labels every object of this release carries. */}}
{{- define "odigos.labels" -}}
app.kubernetes.io/name: odigos
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The Secret that holds the token, and its key. */}}
{{- define "odigos.tokenSecret" -}}
{{- .Values.token.existingSecret | default "odigos-token" -}}
{{- end }}

{{- define "odigos.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end }}

{{/* The collectors' sizing preset, refused at install when it is none of Odigos's. */}}
{{- define "odigos.sizing" -}}
{{- $presets := list "size_s" "size_m" "size_l" -}}
{{- if not (has .Values.collectors.sizing $presets) -}}
{{- fail (printf "collectors.sizing: %q is not a sizing preset; use size_s, size_m or size_l" .Values.collectors.sizing) -}}
{{- end -}}
{{- .Values.collectors.sizing -}}
{{- end }}
