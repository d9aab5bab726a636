{{/* The Secrets the chart makes, their values, and the checksums that restart the pods reading them. */}}

{{/* A Secret the chart makes (secrets.generate): kept on uninstall, so that a reinstall reads its values
     back instead of making new ones. Refused when secrets.generate is off: name a Secret of your own. */}}
{{- define "linewatch.generatedSecretMeta" -}}
{{- if not .root.Values.secrets.generate -}}
{{- fail (printf "%s is required when secrets.generate is false (a render that cannot read the cluster, such as helm template or Argo CD, would make new random values each time)" .value) -}}
{{- end -}}
name: {{ .name }}
labels:
  {{- include "linewatch.labels" .root | nindent 2 }}
annotations:
  helm.sh/resource-policy: keep
{{- end -}}

{{/* A random secret value that survives upgrades: the one already in the cluster, else a new one, drawn
     once per render (the Secret and the checksums on the pods see the same value). */}}
{{- define "linewatch.keptSecret" -}}
{{- $drawn := .root.Values.secrets -}}
{{- $id := printf "_drawn/%s/%s" .name .key -}}
{{- if not (hasKey $drawn $id) -}}
{{- $value := randAlphaNum 32 | b64enc -}}
{{- $existing := lookup "v1" "Secret" .root.Release.Namespace .name -}}
{{- if and $existing $existing.data (index $existing.data .key) -}}
{{- $value = index $existing.data .key -}}
{{- end -}}
{{- $_ := set $drawn $id $value -}}
{{- end -}}
{{- get $drawn $id -}}
{{- end -}}

{{/* The data of each Secret the chart makes (empty when a Secret of your own is named). */}}
{{- define "linewatch.secretData.redis" -}}
{{- if and .Values.redis.enabled (not .Values.redis.existingSecret) -}}
{{- $name := include "linewatch.redisSecret" . -}}
{{- range $key := list "worker-password" "references-password" "signing-key" }}
{{ $key }}: {{ include "linewatch.keptSecret" (dict "root" $ "name" $name "key" $key) }}
{{- end }}
{{- end -}}
{{- end -}}

{{- define "linewatch.secretData.dashboard" -}}
{{- $d := .Values.dashboard -}}
{{- if and $d.enabled (not $d.existingSecret) -}}
{{- $name := printf "%s-dashboard-auth" (include "linewatch.fullname" .) -}}
users: {{ $d.users | b64enc | quote }}
tokens: ""
session-secret: {{ include "linewatch.keptSecret" (dict "root" . "name" $name "key" "session-secret") }}
{{- end -}}
{{- end -}}

{{- define "linewatch.secretData.webhook" -}}
{{- if and .Values.alarms.enabled (not .Values.alarms.existingWebhookSecret) -}}
{{- $name := printf "%s-alarms-webhook" (include "linewatch.fullname" .) -}}
webhook-secret: {{ include "linewatch.keptSecret" (dict "root" . "name" $name "key" "webhook-secret") }}
{{- end -}}
{{- end -}}

{{/* Pod annotations: a checksum of each chart-made Secret the pod reads, so that a new value restarts it.
     (dict "root" . "secrets" (list "redis" ...)). A Secret of your own is not seen: restart the pods
     yourself after changing it (kubectl rollout restart). */}}
{{- define "linewatch.secretChecksums" -}}
{{- range $kind := .secrets }}
{{- with include (printf "linewatch.secretData.%s" $kind) $.root }}
checksum/{{ $kind }}-secret: {{ fromYaml . | toJson | sha256sum }}
{{- end }}
{{- end }}
{{- end -}}
