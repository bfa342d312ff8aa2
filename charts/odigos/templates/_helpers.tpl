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
