{{/*
Labels on everything the chart creates. The operator's own children (the ingest Deployment
and Service) carry the operator's labels instead, so a chart upgrade never adopts them.
*/}}
{{- define "hookgate.labels" -}}
app.kubernetes.io/name: hookgate
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{/* Selects the operator's pods (never the ingest's: component differs). */}}
{{- define "hookgate.operatorSelector" -}}
app.kubernetes.io/name: hookgate
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* Selects the ingest pods: exactly the labels src/operator/ingest.rs gives them. */}}
{{- define "hookgate.ingestSelector" -}}
app.kubernetes.io/name: hookgate
app.kubernetes.io/component: ingest
app.kubernetes.io/managed-by: hookgate
{{- end }}

{{- define "hookgate.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/*
The URL senders use. An explicit publicUrl wins; else the Ingress or HTTPRoute host (https:
webhook senders such as Stripe and Shopify require it); else the in-cluster Service.
*/}}
{{- define "hookgate.publicUrl" -}}
{{- if .Values.publicUrl -}}
{{ .Values.publicUrl | trimSuffix "/" }}
{{- else if and .Values.ingress.enabled .Values.ingress.host -}}
https://{{ .Values.ingress.host }}
{{- else if and .Values.httpRoute.enabled .Values.httpRoute.hostnames -}}
https://{{ first .Values.httpRoute.hostnames }}
{{- else -}}
http://hookgate-ingest.{{ .Release.Namespace }}.svc
{{- end -}}
{{- end }}
