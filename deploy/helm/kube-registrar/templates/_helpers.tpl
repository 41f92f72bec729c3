{{/*
Names and labels shared by every template. Names are cut at 63 characters because that is the
limit of a DNS label, which Kubernetes applies to many of these names.
*/}}

{{/* The chart's name, overridable with nameOverride. */}}
{{- define "kube-registrar.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The base name of every object: the release name alone when it already contains the chart's name
(so `helm install kube-registrar` gives `kube-registrar`, not `kube-registrar-kube-registrar`).
*/}}
{{- define "kube-registrar.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* chart-version, for the helm.sh/chart label. */}}
{{- define "kube-registrar.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels that select the operator's pods; never change them on upgrade (selectors are immutable). */}}
{{- define "kube-registrar.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kube-registrar.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels on every object. */}}
{{- define "kube-registrar.labels" -}}
helm.sh/chart: {{ include "kube-registrar.chart" . }}
{{ include "kube-registrar.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: kube-registrar
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The ServiceAccount the operator runs as. */}}
{{- define "kube-registrar.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "kube-registrar.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Namespaces whose Secrets the operator may read: credentials.namespaces, or the release namespace. */}}
{{- define "kube-registrar.secretNamespaces" -}}
{{- $namespaces := .Values.credentials.namespaces | default (list .Release.Namespace) -}}
{{- toYaml (uniq $namespaces) -}}
{{- end -}}
