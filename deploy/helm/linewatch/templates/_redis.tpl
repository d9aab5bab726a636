{{/* Redis: one ACL user per role that uses it, as common/redis_acl.py grants (the chart tests compare
     the two): key patterns under the key prefix, then `resetchannels -@all` and the commands linewatch
     sends. */}}
{{- define "linewatch.redisRoles" -}}
worker:
  keys: [emb, bank, pool]
  commands: [ping, hgetall, hmget, hstrlen, exists, get, scan, hset, del, multi, exec, discard, expire, incrby]
references:
  keys: [bank]
  commands: [ping, hgetall, hmget, hstrlen, exists, get, scan, hset, del, multi, exec, discard]
{{- end -}}

{{/* The rules of one role's user: (dict "root" . "role" "worker"). */}}
{{- define "linewatch.redisAclRules" -}}
{{- $prefix := (.root.Values.settings.redis | default dict).key_prefix | default "linewatch" -}}
{{- $role := index (fromYaml (include "linewatch.redisRoles" .root)) .role -}}
{{- $rules := list -}}
{{- range $role.keys }}{{ $rules = append $rules (printf "~%s:%s:*" $prefix .) }}{{ end -}}
{{- $rules = concat $rules (list "resetchannels" "-@all") -}}
{{- range $role.commands }}{{ $rules = append $rules (printf "+%s" .) }}{{ end -}}
{{- join " " $rules -}}
{{- end -}}

{{- define "linewatch.redisSecret" -}}
{{- default (printf "%s-redis" (include "linewatch.fullname" .)) .Values.redis.existingSecret -}}
{{- end -}}

{{/* The workers' Redis login: the linewatch-worker user, its password and the signing key from the
     Redis Secret. Without the key a worker refuses to start, unless redis.allowUnsigned. */}}
{{- define "linewatch.redisEnv" -}}
{{- if .Values.redis.enabled -}}
{{- $secret := include "linewatch.redisSecret" . -}}
- name: LINEWATCH_REDIS__URL
  value: {{ printf "redis://%s-redis:6379/0" (include "linewatch.fullname" .) | quote }}
- name: LINEWATCH_REDIS__USERNAME
  value: linewatch-worker
- name: LINEWATCH_REDIS__PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: worker-password
- name: LINEWATCH_REDIS__SIGNING_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: signing-key
      {{- if .Values.redis.allowUnsigned }}
      optional: true
      {{- end }}
- name: LINEWATCH_REDIS__ALLOW_UNSIGNED
  value: {{ .Values.redis.allowUnsigned | toString | quote }}
{{- end -}}
{{- end -}}

{{/* A Secret of your own, where the render can read it (helm install, helm upgrade): the two passwords,
     and the signing key unless redis.allowUnsigned. helm template cannot read it: a missing key then
     stops the pods that need it. */}}
{{- define "linewatch.redisSecretCheck" -}}
{{- with .Values.redis.existingSecret -}}
{{- with lookup "v1" "Secret" $.Release.Namespace . -}}
{{- include "linewatch.redisSecretKeys" (dict "root" $ "secret" .) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "linewatch.redisSecretKeys" -}}
{{- $wanted := list "worker-password" "references-password" -}}
{{- if not .root.Values.redis.allowUnsigned }}{{ $wanted = append $wanted "signing-key" }}{{ end -}}
{{- range $key := $wanted -}}
{{- if not (hasKey ($.secret.data | default dict) $key) -}}
{{- $why := ternary ": without it the workers refuse to start; add one (a random string), or set redis.allowUnsigned=true to run with unsigned Redis values" "" (eq $key "signing-key") -}}
{{- fail (printf "redis.existingSecret %s has no key %s%s" $.secret.metadata.name $key $why) -}}
{{- end -}}
{{- end -}}
{{- end -}}
