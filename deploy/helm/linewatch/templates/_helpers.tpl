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

{{/* A linewatch image: <registry>/<repository>@<digest>, or :<tag> without a digest. linewatch
     publishes no images, so the registry you pushed docker/*.Dockerfile to is required. */}}
{{- define "linewatch.image" -}}
{{- $i := .root.Values.image -}}
{{- $registry := required "image.registry is required: linewatch publishes no images; build docker/*.Dockerfile, push them to a registry of yours and name it here (e.g. registry.example.com/linewatch)" $i.registry | trimSuffix "/" -}}
{{- $repository := .image.repository -}}
{{- if .image.digest -}}
{{- printf "%s/%s@%s" $registry $repository .image.digest -}}
{{- else -}}
{{- printf "%s/%s:%s" $registry $repository (default .root.Chart.AppVersion $i.tag) -}}
{{- end -}}
{{- end -}}

{{/* Kafka's address: the Strimzi cluster's SCRAM listener, or one of your own. Fully qualified, so
     that the KEDA operator, in a namespace of its own, reaches the same listener as the pods. */}}
{{- define "linewatch.bootstrap" -}}
{{- if .Values.kafka.strimzi.enabled -}}
{{- printf "%s-kafka-bootstrap.%s.svc:9093" .Values.kafka.clusterName .Release.Namespace -}}
{{- else -}}
{{- required "kafka.externalBootstrap is required when kafka.strimzi.enabled is false" .Values.kafka.externalBootstrap -}}
{{- end -}}
{{- end -}}

{{/* Environment every linewatch process shares: the settings file, the Kafka login. Only the workers
     get Redis (linewatch.redisEnv). */}}
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

{{/* Pod Security "restricted" for every pod: a non-root user, the runtime's seccomp profile, no
     API token (no process talks to the API server), the image pull Secrets. */}}
{{- define "linewatch.podSpec" -}}
serviceAccountName: {{ include "linewatch.fullname" .root }}
automountServiceAccountToken: false
securityContext:
  runAsNonRoot: true
  runAsUser: {{ .uid }}
  runAsGroup: {{ .uid }}
  fsGroup: {{ .uid }}
  seccompProfile:
    type: RuntimeDefault
{{- with .root.Values.image.pullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Where a pod runs: the component's own nodeSelector, tolerations, priority class and spread. */}}
{{- define "linewatch.scheduling" -}}
{{- $s := pick . "priorityClassName" "nodeSelector" "tolerations" "topologySpreadConstraints" -}}
{{- range $key, $value := $s }}{{ if not $value }}{{ $_ := unset $s $key }}{{ end }}{{ end -}}
{{- if $s }}{{ toYaml $s }}{{ end -}}
{{- end -}}

{{- define "linewatch.securityContext" -}}
runAsNonRoot: true
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The root filesystem is read-only: /tmp and the home folder (HOME, XDG_CACHE_HOME: torch and
     Python caches) are emptyDirs, the only places a linewatch process writes besides a models pull. */}}
{{- define "linewatch.scratchVolumes" -}}
- name: tmp
  emptyDir: {}
- name: home
  emptyDir: {}
{{- end -}}

{{- define "linewatch.scratchMounts" -}}
- name: tmp
  mountPath: /tmp
- name: home
  mountPath: /home/linewatch
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

{{/* One Strimzi ACL: (list type name operations [pattern]). */}}
{{- define "linewatch.acl" -}}
{{- $pattern := "literal" -}}
{{- if gt (len .) 3 }}{{ $pattern = index . 3 }}{{ end -}}
- {resource: {type: {{ index . 0 }}, name: {{ index . 1 | quote }}, patternType: {{ $pattern }}}, operations: {{ index . 2 | toJson }}, host: "*"}
{{- end -}}

{{/* Each role's ACLs, from the topic and group names in the settings: linewatch's role table
     (common/acl.py, without Create grants: the chart makes every topic); the chart tests check
     that the two agree for renamed topics and for exactly-once. */}}
{{- define "linewatch.roleAcls" -}}
{{- $t := fromYaml (include "linewatch.topicNames" .) -}}
{{- $k := .Values.settings.kafka | default dict -}}
{{- $read := list "Read" "Describe" -}}
{{- $write := list "Write" "Describe" -}}
{{- $rw := list "Read" "Describe" "Write" -}}
{{- $tx := "" -}}
{{- if eq ($k.processing_guarantee | default "at-least-once") "exactly-once" -}}
{{- $tx = include "linewatch.acl" (list "transactionalId" (printf "%s-" ($k.transactional_id_prefix | default "linewatch")) $write "prefix") -}}
{{- end -}}
producer:
{{ include "linewatch.acl" (list "topic" $t.frames (list "Write" "Describe" "DescribeConfigs")) }}
worker:
{{ include "linewatch.acl" (list "topic" $t.frames $read) }}
{{ include "linewatch.acl" (list "group" $t.workerGroup (list "Read")) }}
{{ include "linewatch.acl" (list "topic" $t.results $write) }}
{{ include "linewatch.acl" (list "topic" $t.dlq $write) }}
{{ include "linewatch.acl" (list "topic" $t.control $read) }}
{{ include "linewatch.acl" (list "topic" $t.learned $rw) }}
{{ include "linewatch.acl" (list "topic" $t.audit $write) }}
{{ $tx }}
alarms:
{{ include "linewatch.acl" (list "topic" $t.results $read) }}
{{ include "linewatch.acl" (list "group" $t.alarmsGroup (list "Read")) }}
{{ include "linewatch.acl" (list "group" $t.alarmsWebhookGroup (list "Read")) }}
{{ include "linewatch.acl" (list "topic" $t.alarms $rw) }}
{{ include "linewatch.acl" (list "topic" $t.alarmsDlq $write) }}
{{ $tx }}
dashboard:
{{ include "linewatch.acl" (list "topic" $t.results $read) }}
{{ include "linewatch.acl" (list "group" $t.dashboardGroup (list "Read") "prefix") }}
{{ include "linewatch.acl" (list "topic" $t.alarms $read) }}
{{ include "linewatch.acl" (list "topic" $t.dashboardState $rw) }}
{{ include "linewatch.acl" (list "topic" $t.frames $read) }}
{{ include "linewatch.acl" (list "topic" $t.feedback $write) }}
{{ include "linewatch.acl" (list "topic" $t.audit $read) }}
operator:
{{ include "linewatch.acl" (list "topic" $t.control $rw) }}
{{ include "linewatch.acl" (list "topic" $t.learned $read) }}
{{ include "linewatch.acl" (list "topic" $t.audit $rw) }}
{{ include "linewatch.acl" (list "topic" $t.feedback $rw) }}
{{ include "linewatch.acl" (list "topic" $t.frames $read) }}
{{ include "linewatch.acl" (list "topic" $t.results $read) }}
{{- end -}}
