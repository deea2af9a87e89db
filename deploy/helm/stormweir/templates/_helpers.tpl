{{/* The four stages, in pipeline order. */}}
{{- define "stormweir.stages" -}}
receiver deduper aggregator writer
{{- end -}}

{{/* The stages KEDA scales on their consumer's lag. */}}
{{- define "stormweir.workers" -}}
deduper aggregator writer
{{- end -}}

{{- define "stormweir.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Fully qualified app name: the release name, with the chart name unless it contains it. */}}
{{- define "stormweir.fullname" -}}
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

{{- define "stormweir.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "stormweir.selectorLabels" -}}
app.kubernetes.io/name: {{ include "stormweir.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "stormweir.labels" -}}
helm.sh/chart: {{ include "stormweir.chart" . }}
{{ include "stormweir.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: stormweir
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one stage: (dict "root" $ "stage" "receiver"). */}}
{{- define "stormweir.stageSelectorLabels" -}}
{{ include "stormweir.selectorLabels" .root }}
app.kubernetes.io/component: {{ .stage }}
{{- end -}}

{{- define "stormweir.stageLabels" -}}
{{ include "stormweir.labels" .root }}
app.kubernetes.io/component: {{ .stage }}
{{- end -}}

{{/* The image, by tag and, when set, by digest. */}}
{{- define "stormweir.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* JetStream stream name for a kind under the configured prefix (bus.Subjects.StreamName). */}}
{{- define "stormweir.streamName" -}}
{{- $prefix := "stormweir" -}}
{{- with .root.Values.config.bus }}{{ with .prefix }}{{ $prefix = . }}{{ end }}{{ end -}}
{{- printf "%s_%s" ($prefix | replace "-" "_" | replace "." "_" | upper) .kind -}}
{{- end -}}

{{/*
GOMEMLIMIT in bytes: goMemLimitPercent of a memory quantity (integer with
an optional Ki, Mi, Gi, Ti, k, M, G or T suffix).
*/}}
{{- define "stormweir.goMemLimit" -}}
{{- $q := toString .quantity -}}
{{- $units := dict "" 1 "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 "k" 1000 "M" 1000000 "G" 1000000000 "T" 1000000000000 -}}
{{- $num := regexFind "^[0-9]+" $q -}}
{{- $unit := trimPrefix $num $q -}}
{{- if or (not $num) (not (hasKey $units $unit)) -}}
{{- fail (printf "%s.resources.limits.memory %q: use an integer with an optional Ki, Mi, Gi, Ti, k, M, G or T suffix" .stage $q) -}}
{{- end -}}
{{- div (mul (int64 $num) (index $units $unit) (int64 .percent)) 100 -}}
{{- end -}}

{{/*
The configuration file: values.config with the keys the chart derives
laid over it.
*/}}
{{- define "stormweir.config" -}}
{{- $derived := dict
  "bus" (dict "url" .Values.nats.url)
  "redis" (dict "mode" .Values.redis.mode "addrs" .Values.redis.addrs "db" .Values.redis.db)
  "receiver" (dict "listen" ":8080")
  "worker" (dict "listen" ":9090")
  "writer" (dict "fallback_namespace" .Release.Namespace)
-}}
{{- with .Values.redis.masterName }}{{ $_ := set $derived.redis "master_name" . }}{{ end -}}
{{- with .Values.redis.username }}{{ $_ := set $derived.redis "username" . }}{{ end -}}
{{- $cfg := deepCopy .Values.config -}}
{{- with $cfg.writer }}{{ with .fallback_namespace }}{{ $_ := set $derived.writer "fallback_namespace" . }}{{ end }}{{ end -}}
{{- if .Values.tracing.enabled }}{{ $_ := set $derived "tracing" (dict "endpoint" (required "tracing.endpoint is required with tracing.enabled" .Values.tracing.endpoint) "sample_ratio" (.Values.tracing.sampleRatio | float64)) }}{{ end -}}
{{- toYaml (mergeOverwrite $cfg $derived) -}}
{{- end -}}

{{/* Whether a stage talks to Redis. */}}
{{/*
"true" when the receiver reviews ServiceAccount tokens with the API server
(config.receiver.auth.token_review.enabled): it then has a ServiceAccount
of its own, with a token, bound to the review verbs only.
*/}}
{{- define "stormweir.tokenReview" -}}
{{- with .Values.config.receiver }}{{ with .auth }}{{ with .token_review }}{{ if .enabled }}true{{ end }}{{ end }}{{ end }}{{ end -}}
{{- end -}}

{{- define "stormweir.usesRedis" -}}
{{- if has .stage (list "deduper" "aggregator" "writer") }}true{{ end -}}
{{- end -}}

{{/*
Secret volumes of one stage: NATS credentials for every stage, the
webhook tokens for the receiver, the Redis password for the stages that
use Redis. (dict "root" $ "stage" "writer")
*/}}
{{- define "stormweir.secretVolumes" -}}
{{- $v := .root.Values -}}
{{- if ne $v.nats.auth.method "none" }}
- name: nats-auth
  secret:
    secretName: {{ required (printf "nats.auth.secrets.%s is required with nats.auth.method %s" .stage $v.nats.auth.method) (index $v.nats.auth.secrets .stage) }}
    defaultMode: 0440
    items:
      - key: {{ include "stormweir.natsAuthKey" $v }}
        path: {{ include "stormweir.natsAuthKey" $v }}
{{- end }}
{{- if $v.nats.tls.enabled }}
- name: nats-tls
  secret:
    secretName: {{ required "nats.tls.secretName is required with nats.tls.enabled" $v.nats.tls.secretName }}
    defaultMode: 0440
{{- end }}
{{- if eq .stage "receiver" }}
- name: webhook-tokens
  secret:
    secretName: {{ required "receiver.auth.existingSecret is required: the receiver accepts no webhook without a token" $v.receiver.auth.existingSecret }}
    defaultMode: 0440
    items:
      - key: {{ $v.receiver.auth.key }}
        path: tokens
{{- end }}
{{- if include "stormweir.usesRedis" . }}
{{- if $v.redis.auth.existingSecret }}
- name: redis-auth
  secret:
    secretName: {{ $v.redis.auth.existingSecret }}
    defaultMode: 0440
    items:
      - key: {{ $v.redis.auth.passwordKey }}
        path: password
{{- end }}
{{- if $v.redis.tls.enabled }}
- name: redis-tls
  secret:
    secretName: {{ required "redis.tls.secretName is required with redis.tls.enabled" $v.redis.tls.secretName }}
    defaultMode: 0440
{{- end }}
{{- end }}
{{- end -}}

{{- define "stormweir.natsAuthKey" -}}
{{- $keys := dict "creds" "creds" "userPassword" "password" "token" "token" "nkey" "nkey" -}}
{{- if not (hasKey $keys .nats.auth.method) -}}
{{- fail (printf "nats.auth.method %q: use none, creds, userPassword, token or nkey" .nats.auth.method) -}}
{{- end -}}
{{- index $keys .nats.auth.method -}}
{{- end -}}

{{- define "stormweir.secretMounts" -}}
{{- $v := .root.Values -}}
{{- if ne $v.nats.auth.method "none" }}
- {name: nats-auth, mountPath: /etc/stormweir/nats, readOnly: true}
{{- end }}
{{- if $v.nats.tls.enabled }}
- {name: nats-tls, mountPath: /etc/stormweir/nats-tls, readOnly: true}
{{- end }}
{{- if eq .stage "receiver" }}
- {name: webhook-tokens, mountPath: /etc/stormweir/webhook, readOnly: true}
{{- end }}
{{- if include "stormweir.usesRedis" . }}
{{- if $v.redis.auth.existingSecret }}
- {name: redis-auth, mountPath: /etc/stormweir/redis, readOnly: true}
{{- end }}
{{- if $v.redis.tls.enabled }}
- {name: redis-tls, mountPath: /etc/stormweir/redis-tls, readOnly: true}
{{- end }}
{{- end }}
{{- end -}}

{{/* Environment naming the mounted secret files (the keys of pkg/config). */}}
{{- define "stormweir.secretEnv" -}}
{{- $v := .root.Values -}}
{{- $m := $v.nats.auth.method -}}
{{- if and (ne $m "none") (ne .stage "writer") }}
- {name: STORMWEIR_BUS_MANAGE_STREAMS, value: "false"}
{{- end }}
{{- if eq $m "creds" }}
- {name: STORMWEIR_BUS_AUTH_CREDS_FILE, value: /etc/stormweir/nats/creds}
{{- else if eq $m "userPassword" }}
- {name: STORMWEIR_BUS_AUTH_USER, value: {{ index $v.nats.auth.users .stage | quote }}}
- {name: STORMWEIR_BUS_AUTH_PASSWORD_FILE, value: /etc/stormweir/nats/password}
{{- else if eq $m "token" }}
- {name: STORMWEIR_BUS_AUTH_TOKEN_FILE, value: /etc/stormweir/nats/token}
{{- else if eq $m "nkey" }}
- {name: STORMWEIR_BUS_AUTH_NKEY_FILE, value: /etc/stormweir/nats/nkey}
{{- end }}
{{- if $v.nats.tls.enabled }}
- {name: STORMWEIR_BUS_TLS_CA_FILE, value: /etc/stormweir/nats-tls/ca.crt}
{{- if $v.nats.tls.clientCert }}
- {name: STORMWEIR_BUS_TLS_CERT_FILE, value: /etc/stormweir/nats-tls/tls.crt}
- {name: STORMWEIR_BUS_TLS_KEY_FILE, value: /etc/stormweir/nats-tls/tls.key}
{{- end }}
{{- with $v.nats.tls.serverName }}
- {name: STORMWEIR_BUS_TLS_SERVER_NAME, value: {{ . | quote }}}
{{- end }}
{{- end }}
{{- if eq .stage "receiver" }}
- {name: STORMWEIR_RECEIVER_AUTH_TOKEN_FILE, value: /etc/stormweir/webhook/tokens}
{{- end }}
{{- if include "stormweir.usesRedis" . }}
{{- if $v.redis.auth.existingSecret }}
- {name: STORMWEIR_REDIS_PASSWORD_FILE, value: /etc/stormweir/redis/password}
{{- end }}
{{- if $v.redis.tls.enabled }}
- {name: STORMWEIR_REDIS_TLS_ENABLED, value: "true"}
- {name: STORMWEIR_REDIS_TLS_CA_FILE, value: /etc/stormweir/redis-tls/ca.crt}
{{- if $v.redis.tls.clientCert }}
- {name: STORMWEIR_REDIS_TLS_CERT_FILE, value: /etc/stormweir/redis-tls/tls.crt}
- {name: STORMWEIR_REDIS_TLS_KEY_FILE, value: /etc/stormweir/redis-tls/tls.key}
{{- end }}
{{- with $v.redis.tls.serverName }}
- {name: STORMWEIR_REDIS_TLS_SERVER_NAME, value: {{ . | quote }}}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
stormweir.watcher is "true" when the receiver watches Kubernetes events
(config.watcher.enabled): it then runs with an API token and the watcher's
RBAC.
*/}}
{{- define "stormweir.watcher" -}}
{{- with .Values.config.watcher }}{{ if .enabled }}true{{ end }}{{ end -}}
{{- end }}

{{/*
stormweir.receiverAPI is "true" when the receiver talks to the API server
(token reviews or the event watcher): it then runs with a ServiceAccount
token of its own.
*/}}
{{- define "stormweir.receiverAPI" -}}
{{- if or (include "stormweir.tokenReview" .) (include "stormweir.watcher" .) }}true{{ end -}}
{{- end }}
