{{/* Names and labels shared by the templates. */}}

{{- define "repository.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "repository.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "repository.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: server
{{- end -}}

{{- define "repository.mongodbSelector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: mongodb
{{- end -}}

{{- define "repository.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "repository.mongodb" -}}
{{- eq .Values.store.mode "mongodb" -}}
{{- end -}}

{{/* The Secret that holds the MongoDB URI. */}}
{{- define "repository.secretName" -}}
{{- if .Values.store.mongodb.existingSecret -}}
{{- .Values.store.mongodb.existingSecret -}}
{{- else -}}
{{- include "repository.fullname" . -}}
{{- end -}}
{{- end -}}

{{- define "repository.dataClaim" -}}
{{- .Values.store.embedded.persistence.existingClaim | default (printf "%s-data" (include "repository.fullname" .)) -}}
{{- end -}}

{{- define "repository.validate" -}}
{{- if not (has .Values.store.mode (list "embedded" "mongodb")) -}}
{{- fail "store.mode must be embedded or mongodb" -}}
{{- end -}}
{{- if and (eq .Values.store.mode "embedded") (gt (int .Values.replicaCount) 1) -}}
{{- fail "the embedded store is one process on one volume: replicaCount must be 1 (use store.mode=mongodb to scale out)" -}}
{{- end -}}
{{- if and (eq .Values.store.mode "mongodb") (not .Values.store.mongodb.bundled) (not .Values.store.mongodb.uri) (not .Values.store.mongodb.existingSecret) -}}
{{- fail "store.mongodb.bundled is false: set store.mongodb.uri or store.mongodb.existingSecret" -}}
{{- end -}}
{{- if and .Values.seed.enabled (not .Values.seed.url) (not .Values.seed.existingClaim) -}}
{{- fail "seed.enabled: set seed.url or seed.existingClaim" -}}
{{- end -}}
{{- end -}}

{{/* The seeding step: fetches the archive if it is at a URL, then restores it into an empty store. */}}
{{- define "repository.seedContainer" -}}
- name: seed
  image: {{ include "repository.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  command: ["/bin/sh", "-c"]
  args:
    - |
      set -eu
      {{- if .Values.seed.url }}
      curl --fail --silent --show-error --location --output /seed/{{ .Values.seed.path }} "$SEED_URL"
      {{- end }}
      exec component-repository restore --if-empty --in /seed/{{ .Values.seed.path }}
  envFrom:
    - configMapRef:
        name: {{ include "repository.fullname" . }}
  {{- $secretEnv := include "repository.secretEnv" . }}
  {{- if or $secretEnv .Values.seed.url }}
  env:
    {{- with $secretEnv }}
    {{- . | trim | nindent 4 }}
    {{- end }}
    {{- if .Values.seed.url }}
    - name: SEED_URL
      value: {{ .Values.seed.url | quote }}
    {{- end }}
  {{- end }}
  securityContext:
    {{- toYaml .Values.securityContext | nindent 4 }}
  resources:
    {{- toYaml .Values.resources | nindent 4 }}
  volumeMounts:
    {{- include "repository.volumeMounts" . | nindent 4 }}
    - name: seed
      mountPath: /seed
      {{- if .Values.seed.existingClaim }}
      readOnly: true
      {{- end }}
{{- end -}}

{{- define "repository.seedVolume" -}}
- name: seed
  {{- if .Values.seed.existingClaim }}
  persistentVolumeClaim:
    claimName: {{ .Values.seed.existingClaim }}
    readOnly: true
  {{- else }}
  emptyDir: {}
  {{- end }}
{{- end -}}

{{- define "repository.authEnabled" -}}
{{- if or .Values.auth.writeTokens .Values.auth.readTokens .Values.auth.existingSecret -}}true{{- end -}}
{{- end -}}

{{- define "repository.authSecretName" -}}
{{- .Values.auth.existingSecret | default (include "repository.fullname" .) -}}
{{- end -}}

{{/* Whether the release creates its own Secret (for the MongoDB URI or the tokens). */}}
{{- define "repository.ownSecret" -}}
{{- if or (and (eq .Values.store.mode "mongodb") (not .Values.store.mongodb.existingSecret)) (and (include "repository.authEnabled" .) (not .Values.auth.existingSecret)) -}}true{{- end -}}
{{- end -}}

{{- define "repository.secretEnv" -}}
{{- if eq .Values.store.mode "mongodb" }}
- name: MONGODB_URI
  valueFrom:
    secretKeyRef:
      name: {{ include "repository.secretName" . }}
      key: mongodb-uri
{{- end }}
{{- if include "repository.authEnabled" . }}
- name: REPOSITORY_WRITE_TOKENS
  valueFrom:
    secretKeyRef:
      name: {{ include "repository.authSecretName" . }}
      key: write-tokens
      optional: true
- name: REPOSITORY_READ_TOKENS
  valueFrom:
    secretKeyRef:
      name: {{ include "repository.authSecretName" . }}
      key: read-tokens
      optional: true
{{- end }}
{{- end -}}

{{- define "repository.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- if eq .Values.store.mode "embedded" }}
- name: data
  mountPath: /data
{{- end }}
{{- end -}}

{{- define "repository.volumes" -}}
- name: tmp
  emptyDir: {}
{{- if eq .Values.store.mode "embedded" }}
- name: data
  persistentVolumeClaim:
    claimName: {{ include "repository.dataClaim" . }}
{{- end }}
{{- end -}}
