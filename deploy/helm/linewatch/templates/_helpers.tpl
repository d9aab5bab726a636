{{/* Names and labels shared by every template. */}}
{{- define "linewatch.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "linewatch.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "linewatch.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "linewatch.image" -}}
{{- printf "%s%s:%s" .root.Values.image.registry .repository .root.Values.image.tag -}}
{{- end -}}

{{/* Kafka's address: the Strimzi cluster's SCRAM listener, or one of your own. */}}
{{- define "linewatch.bootstrap" -}}
{{- if .Values.kafka.strimzi.enabled -}}
{{- printf "%s-kafka-bootstrap:9093" .Values.kafka.clusterName -}}
{{- else -}}
{{- required "kafka.externalBootstrap is required when kafka.strimzi.enabled is false" .Values.kafka.externalBootstrap -}}
{{- end -}}
{{- end -}}

{{/* Environment every linewatch process shares: the settings file, Kafka login, Redis URL. */}}
{{- define "linewatch.commonEnv" -}}
- name: LINEWATCH_CONFIG
  value: /etc/linewatch/linewatch.yaml
- name: LINEWATCH_KAFKA__SASL_USERNAME
  value: {{ .user | quote }}
- name: LINEWATCH_KAFKA__SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .user }}
      key: password
{{- if .root.Values.redis.enabled }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "linewatch.redisSecret" .root }}
      key: redis-password
- name: LINEWATCH_REDIS__URL
  value: {{ printf "redis://linewatch:$(REDIS_PASSWORD)@%s-redis:6379/0" (include "linewatch.fullname" .root) | quote }}
- name: LINEWATCH_REDIS__SIGNING_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "linewatch.redisSecret" .root }}
      key: signing-key
      optional: true
{{- end }}
{{- end -}}

{{- define "linewatch.redisSecret" -}}
{{- default (printf "%s-redis" (include "linewatch.fullname" .)) .Values.redis.existingSecret -}}
{{- end -}}

{{- define "linewatch.settingsVolume" -}}
- name: settings
  configMap:
    name: {{ include "linewatch.fullname" . }}-settings
{{- end -}}

{{- define "linewatch.settingsMount" -}}
- name: settings
  mountPath: /etc/linewatch
  readOnly: true
{{- end -}}

{{/* A random secret value that survives upgrades: the one already in the cluster, else a new one. */}}
{{- define "linewatch.keptSecret" -}}
{{- $existing := lookup "v1" "Secret" .namespace .name -}}
{{- if and $existing (index $existing.data .key) -}}
{{- index $existing.data .key -}}
{{- else -}}
{{- randAlphaNum 32 | b64enc -}}
{{- end -}}
{{- end -}}

{{/* The Strimzi cluster CA, for TLS to the brokers. */}}
{{- define "linewatch.kafkaCaVolume" -}}
{{- if .Values.kafka.strimzi.enabled }}
- name: kafka-ca
  secret:
    secretName: {{ .Values.kafka.clusterName }}-cluster-ca-cert
    items:
      - key: ca.crt
        path: ca.crt
{{- end }}
{{- end -}}

{{- define "linewatch.kafkaCaMount" -}}
{{- if .Values.kafka.strimzi.enabled }}
- name: kafka-ca
  mountPath: /var/run/linewatch/kafka-ca
  readOnly: true
{{- end }}
{{- end -}}

{{- define "linewatch.securityContext" -}}
runAsNonRoot: true
allowPrivilegeEscalation: false
readOnlyRootFilesystem: false
capabilities:
  drop: [ALL]
{{- end -}}

{{/* linewatch's topic names (the settings' own defaults unless the values rename them). */}}
{{- define "linewatch.topicNames" -}}
{{- $k := .Values.settings.kafka | default dict -}}
{{- $a := .Values.settings.alarms | default dict -}}
{{- $d := .Values.settings.dashboard | default dict -}}
frames: {{ $k.frames_topic | default "linewatch.frames" }}
results: {{ $k.results_topic | default "linewatch.results" }}
dlq: {{ $k.dlq_topic | default "linewatch.frames.dlq" }}
alarms: {{ $k.alarms_topic | default "linewatch.alarms" }}
control: {{ $k.control_topic | default "linewatch.control" }}
feedback: {{ $k.feedback_topic | default "linewatch.feedback" }}
audit: {{ $k.audit_topic | default "linewatch.audit" }}
learned: {{ printf "%s.learned" ($k.control_topic | default "linewatch.control") }}
alarmsDlq: {{ $a.dlq_topic | default "linewatch.alarms.dlq" }}
dashboardState: {{ $d.state_topic | default "linewatch.dashboard.alarm-state" }}
workerGroup: {{ $k.group_id | default "linewatch" }}
alarmsGroup: {{ $a.group_id | default "linewatch-alarms" }}
alarmsWebhookGroup: {{ $a.webhook_group_id | default "linewatch-alarms-mes" }}
dashboardGroup: {{ $d.group_id | default "linewatch-dashboard" }}
{{- end -}}
