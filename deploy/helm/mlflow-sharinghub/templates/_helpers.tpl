{{/* The chart's name, cut to a DNS label. */}}
{{- define "mlflow-sharinghub.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The name of the release's objects: the release name alone when it already
names the chart (mlflow-sharinghub in the reference), else both.
*/}}
{{- define "mlflow-sharinghub.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := include "mlflow-sharinghub.name" . }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The PostgreSQL service: <release>-postgresql, the host of the store URI. */}}
{{- define "mlflow-sharinghub.postgresql.fullname" -}}
{{- printf "%s-postgresql" .Release.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mlflow-sharinghub.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "mlflow-sharinghub.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selectors carry the component so the server never selects PostgreSQL. */}}
{{- define "mlflow-sharinghub.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mlflow-sharinghub.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: server
{{- end }}

{{- define "mlflow-sharinghub.postgresql.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mlflow-sharinghub.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: postgresql
{{- end }}

{{- define "mlflow-sharinghub.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "mlflow-sharinghub.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "mlflow-sharinghub.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/* Host header values the server must accept: the ingress hosts. */}}
{{- define "mlflow-sharinghub.allowedHosts" -}}
{{- $hosts := list }}
{{- range .Values.ingress.hosts }}
{{- $hosts = append $hosts .host }}
{{- end }}
{{- $hosts | uniq | join "," }}
{{- end }}

{{/*
The backend store. A secret URI and the bundled PostgreSQL exclude each
other; the PostgreSQL password reaches the URI through $(MLFLOW_POSTGRES_PASSWORD),
which Kubernetes expands from the env entry defined just before it.
*/}}
{{- define "mlflow-sharinghub.backendStoreEnv" -}}
{{- $sh := .Values.mlflowSharinghub }}
{{- if and $sh.backendStoreUriSecret .Values.postgresql.enabled }}
{{- fail "mlflowSharinghub.backendStoreUriSecret and postgresql.enabled exclude each other: choose one backend store" }}
{{- end }}
{{- if $sh.backendStoreUriSecret }}
- name: MLFLOW_BACKEND_STORE_URI
  valueFrom:
    secretKeyRef:
      name: {{ $sh.secretName }}
      key: backend-store-uri
{{- else if .Values.postgresql.enabled }}
{{- $auth := .Values.postgresql.auth }}
- name: MLFLOW_POSTGRES_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $auth.existingSecret }}
      key: password
- name: MLFLOW_BACKEND_STORE_URI
  value: {{ printf "postgresql://%s:$(MLFLOW_POSTGRES_PASSWORD)@%s:5432/%s" $auth.username (include "mlflow-sharinghub.postgresql.fullname" .) $auth.database | quote }}
{{- end }}
{{- end }}
