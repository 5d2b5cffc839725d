{{/* The chart's name, trimmed to fit label values. */}}
{{- define "wedsync.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The full name of the release's objects: the release name, unless it already names the chart. */}}
{{- define "wedsync.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels that select the operator's pods; never change them in an upgrade. */}}
{{- define "wedsync.selectorLabels" -}}
app.kubernetes.io/name: {{ include "wedsync.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels on every object of the release. */}}
{{- define "wedsync.labels" -}}
{{ include "wedsync.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: wedsync-operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "wedsync.serviceAccountName" -}}
{{- .Values.serviceAccount.name | default (include "wedsync.fullname" .) -}}
{{- end -}}

{{- define "wedsync.peeringName" -}}
{{- .Values.peering.name | default (include "wedsync.fullname" .) -}}
{{- end -}}

{{- define "wedsync.metricsService" -}}
{{- printf "%s-metrics" (include "wedsync.fullname" .) -}}
{{- end -}}

{{- define "wedsync.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository .Values.image.tag -}}
{{- end -}}
{{- end -}}

{{/* The generated RBAC rules (files/rbac-rules.yaml, from operator/wedsync_operator/rbac.py). */}}
{{- define "wedsync.rules" -}}
{{- $rules := .Files.Get "files/rbac-rules.yaml" | fromYaml -}}
{{- if or (not $rules) (hasKey $rules "Error") -}}
{{- fail "files/rbac-rules.yaml is missing or unreadable: run `make crds`" -}}
{{- end -}}
{{- toYaml $rules -}}
{{- end -}}

{{/* Cross-value checks the schema cannot word well. */}}
{{- define "wedsync.validate" -}}
{{- if and .Values.rbac.namespaced (not .Values.watchNamespaces) -}}
{{- fail "rbac.namespaced is true but watchNamespaces is empty: list the namespaces the operator should watch" -}}
{{- end -}}
{{- if and (not .Values.rbac.namespaced) .Values.watchNamespaces -}}
{{- fail "watchNamespaces is set but rbac.namespaced is false: the operator would watch every namespace; set rbac.namespaced: true to restrict it" -}}
{{- end -}}
{{- end -}}

{{- define "wedsync.webhookService" -}}
{{- printf "%s-webhook" (include "wedsync.fullname" .) -}}
{{- end }}

{{- define "wedsync.webhookConfig" -}}
{{- printf "%s-changefreeze" (include "wedsync.fullname" .) -}}
{{- end }}

{{- define "wedsync.webhookSecret" -}}
{{- printf "%s-webhook-tls" (include "wedsync.fullname" .) -}}
{{- end }}
