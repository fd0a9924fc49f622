{{/* Names ------------------------------------------------------------------------------------ */}}

{{- define "arqscale.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "arqscale.fullname" -}}
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

{{/*
A DNS-safe, stable, unique name for a queue (mirrored by arqscale.chart.schema.queue_slug):
lowercase, runs of other characters -> "-", at most 40 characters; when that changed the name
(case, characters, length), "-" and 8 hex digits of the name's SHA-256 follow, so `Email`,
`email` and `e-mail` never collide.
*/}}
{{- define "arqscale.queueSlug" -}}
{{- $dashed := regexReplaceAll "[^a-z0-9-]+" (lower .) "-" -}}
{{- $slug := regexReplaceAll "-+" $dashed "-" | trimAll "-" -}}
{{- $short := trunc 40 $slug | trimSuffix "-" -}}
{{- if eq $short . -}}
{{- $short -}}
{{- else -}}
{{- printf "%s-%s" $short (sha256sum . | trunc 8) -}}
{{- end -}}
{{- end -}}

{{/* The name of a queue's Deployment, HPA/ScaledObject and PDB: (dict "root" $ "queue" NAME) */}}
{{- define "arqscale.workerName" -}}
{{- $name := printf "%s-worker-%s" (include "arqscale.fullname" .root) (include "arqscale.queueSlug" .queue) -}}
{{- if gt (len $name) 63 -}}
{{- printf "%s-%s" (trunc 54 $name | trimSuffix "-") (sha256sum $name | trunc 8) -}}
{{- else -}}
{{- $name -}}
{{- end -}}
{{- end -}}

{{- define "arqscale.componentName" -}}
{{- printf "%s-%s" (include "arqscale.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels ----------------------------------------------------------------------------------- */}}

{{- define "arqscale.selectorLabels" -}}
app.kubernetes.io/name: {{ include "arqscale.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "arqscale.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "arqscale.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: arqscale
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* (dict "root" $ "component" "exporter") -> selector labels of a component */}}
{{- define "arqscale.componentSelector" -}}
{{ include "arqscale.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "arqscale.componentLabels" -}}
{{ include "arqscale.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* (dict "root" $ "queue" NAME): selector labels of a queue's workers; the queue label keeps the real name */}}
{{- define "arqscale.workerSelector" -}}
{{ include "arqscale.selectorLabels" .root }}
app.kubernetes.io/component: worker
arqscale.io/queue: {{ .queue | quote }}
{{- end -}}

{{- define "arqscale.workerLabels" -}}
{{ include "arqscale.labels" .root }}
app.kubernetes.io/component: worker
arqscale.io/queue: {{ .queue | quote }}
{{- end -}}

{{/* Images ----------------------------------------------------------------------------------- */}}

{{/* (dict "image" .Values.image "root" $ "what" "image") -> repository:tag[@digest]; never latest */}}
{{- define "arqscale.image" -}}
{{- $tag := .image.tag | default .root.Chart.AppVersion | toString -}}
{{- if eq $tag "latest" -}}
{{- fail (printf "%s.tag: `latest` is not allowed; pin a version" .what) -}}
{{- end -}}
{{- if .image.digest -}}
{{- printf "%s:%s@%s" .image.repository $tag .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* Numbers ---------------------------------------------------------------------------------- */}}

{{/* A float as a Kubernetes quantity: 20 -> "20", 2.5 -> "2500m" */}}
{{- define "arqscale.quantity" -}}
{{- $v := float64 . -}}
{{- if eq $v (floor $v) -}}
{{- printf "%d" (int64 $v) -}}
{{- else -}}
{{- printf "%dm" (int64 (round (mulf $v 1000) 0)) -}}
{{- end -}}
{{- end -}}

{{/* Redis ------------------------------------------------------------------------------------ */}}

{{- define "arqscale.redisSecretName" -}}
{{- if .Values.redis.enabled -}}
{{- .Values.redis.auth.existingSecret | default (include "arqscale.componentName" (dict "root" . "component" "redis")) -}}
{{- else -}}
{{- .Values.externalRedis.existingSecret | default (include "arqscale.componentName" (dict "root" . "component" "redis-external")) -}}
{{- end -}}
{{- end -}}

{{- define "arqscale.validateRedis" -}}
{{- if not .Values.redis.enabled -}}
{{- $x := .Values.externalRedis -}}
{{- if not (or $x.url $x.host $x.existingSecretUrlKey $x.sentinel.addresses $x.cluster.nodes) -}}
{{- fail "externalRedis: redis.enabled is false, so set externalRedis.url, externalRedis.host, externalRedis.sentinel.addresses, externalRedis.cluster.nodes or externalRedis.existingSecret with existingSecretUrlKey" -}}
{{- end -}}
{{- if and $x.cluster.nodes (or $x.url $x.host $x.existingSecretUrlKey $x.sentinel.addresses) -}}
{{- fail "externalRedis.cluster.nodes: the cluster's nodes name every server, so leave externalRedis.url, externalRedis.host, existingSecretUrlKey and sentinel.addresses empty" -}}
{{- end -}}
{{- if and $x.cluster.nodes (ne (int $x.db) 0) -}}
{{- fail "externalRedis.db: must be 0 with externalRedis.cluster.nodes (a Redis Cluster has database 0 only)" -}}
{{- end -}}
{{- if and $x.cluster.nodes (gt (int $x.waitReplicas) 0) -}}
{{- fail "externalRedis.waitReplicas: not supported with externalRedis.cluster.nodes (WAIT counts one connection's writes; a cluster client spreads them over the shards)" -}}
{{- end -}}
{{- if and $x.sentinel.addresses (or $x.url $x.host $x.existingSecretUrlKey) -}}
{{- fail "externalRedis.sentinel.addresses: the sentinels name the primary, so leave externalRedis.url, externalRedis.host and existingSecretUrlKey empty" -}}
{{- end -}}
{{- if and $x.sentinel.existingSecretPasswordKey (not $x.existingSecret) -}}
{{- fail "externalRedis.sentinel.existingSecretPasswordKey: needs externalRedis.existingSecret" -}}
{{- end -}}
{{- if and $x.existingSecretUrlKey (not $x.existingSecret) -}}
{{- fail "externalRedis.existingSecretUrlKey: needs externalRedis.existingSecret" -}}
{{- end -}}
{{- if and $x.url (not (or (hasPrefix "redis://" $x.url) (hasPrefix "rediss://" $x.url))) -}}
{{- fail "externalRedis.url: must start with redis:// or rediss://" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Environment of every arqscale process that talks to Redis (REDIS_* as read by arqscale.core.settings) */}}
{{- define "arqscale.redisEnv" -}}
{{- $secret := include "arqscale.redisSecretName" . -}}
{{- if .Values.redis.enabled }}
- name: REDIS_HOST
  value: {{ include "arqscale.componentName" (dict "root" . "component" "redis") | quote }}
- name: REDIS_PORT
  value: "6379"
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ .Values.redis.auth.existingSecretPasswordKey }}
{{- else }}
{{- $x := .Values.externalRedis }}
{{- if $x.existingSecretUrlKey }}
- name: REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $x.existingSecretUrlKey }}
{{- else if $x.url }}
- name: REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "arqscale.componentName" (dict "root" . "component" "redis-external") }}
      key: redis-url
{{- else }}
{{- if $x.cluster.nodes }}
- name: REDIS_CLUSTER_NODES
  value: {{ join "," $x.cluster.nodes | quote }}
{{- else if $x.sentinel.addresses }}
- name: REDIS_SENTINELS
  value: {{ join "," $x.sentinel.addresses | quote }}
- name: REDIS_SENTINEL_MASTER
  value: {{ $x.sentinel.masterName | quote }}
{{- with $x.sentinel.username }}
- name: REDIS_SENTINEL_USERNAME
  value: {{ . | quote }}
{{- end }}
{{- if and $x.existingSecret $x.sentinel.existingSecretPasswordKey }}
- name: REDIS_SENTINEL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $x.existingSecret }}
      key: {{ $x.sentinel.existingSecretPasswordKey }}
{{- else if $x.sentinel.password }}
- name: REDIS_SENTINEL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "arqscale.componentName" (dict "root" . "component" "redis-external") }}
      key: sentinel-password
{{- end }}
{{- if $x.sentinel.tls }}
- name: REDIS_SENTINEL_TLS
  value: "true"
{{- end }}
{{- else }}
- name: REDIS_HOST
  value: {{ $x.host | quote }}
- name: REDIS_PORT
  value: {{ $x.port | toString | quote }}
{{- end }}
- name: REDIS_DB
  value: {{ $x.db | toString | quote }}
{{- with $x.username }}
- name: REDIS_USERNAME
  value: {{ . | quote }}
{{- end }}
{{- if and $x.existingSecret $x.existingSecretPasswordKey }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $x.existingSecret }}
      key: {{ $x.existingSecretPasswordKey }}
{{- else if $x.password }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "arqscale.componentName" (dict "root" . "component" "redis-external") }}
      key: redis-password
{{- end }}
{{- end }}
{{- if gt (int $x.waitReplicas) 0 }}
- name: REDIS_WAIT_REPLICAS
  value: {{ $x.waitReplicas | toString | quote }}
- name: REDIS_WAIT_TIMEOUT_MS
  value: {{ $x.waitTimeoutMs | toString | quote }}
{{- end }}
{{- if $x.tls.enabled }}
- name: REDIS_TLS
  value: "true"
{{- end }}
{{- if $x.tls.caSecret }}
- name: REDIS_TLS_CA_FILE
  value: /etc/arqscale/redis-tls/ca/{{ $x.tls.caKey }}
{{- end }}
{{- if $x.tls.clientCertSecret }}
- name: REDIS_TLS_CERT_FILE
  value: /etc/arqscale/redis-tls/client/tls.crt
- name: REDIS_TLS_KEY_FILE
  value: /etc/arqscale/redis-tls/client/tls.key
{{- end }}
{{- end }}
{{- end -}}

{{- define "arqscale.redisTlsVolumes" -}}
{{- if not .Values.redis.enabled }}
{{- with .Values.externalRedis.tls.caSecret }}
- name: redis-tls-ca
  secret:
    secretName: {{ . }}
{{- end }}
{{- with .Values.externalRedis.tls.clientCertSecret }}
- name: redis-tls-client
  secret:
    secretName: {{ . }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "arqscale.redisTlsMounts" -}}
{{- if not .Values.redis.enabled }}
{{- if .Values.externalRedis.tls.caSecret }}
- name: redis-tls-ca
  mountPath: /etc/arqscale/redis-tls/ca
  readOnly: true
{{- end }}
{{- if .Values.externalRedis.tls.clientCertSecret }}
- name: redis-tls-client
  mountPath: /etc/arqscale/redis-tls/client
  readOnly: true
{{- end }}
{{- end }}
{{- end -}}

{{/* Settings every arqscale process shares */}}
{{- define "arqscale.commonEnv" -}}
- name: ARQSCALE_QUEUES_FILE
  value: /etc/arqscale/queues/queues.yaml
- name: ARQSCALE_LOG_LEVEL
  value: {{ .Values.config.logLevel | quote }}
- name: ARQSCALE_LOG_FORMAT
  value: {{ .Values.config.logFormat | quote }}
{{- include "arqscale.redisEnv" . }}
{{- end -}}

{{/* OTEL_* for a traced process (docs/kubernetes.md "Tracing"); args: dict "root" $ "service" name "pod" bool
(whether POD_NAME/POD_NAMESPACE are set earlier in the list, so the pod is named in the resource) */}}
{{- define "arqscale.tracingEnv" -}}
{{- $t := .root.Values.tracing -}}
{{- if $t.enabled }}
{{- if not $t.endpoint }}{{ fail "tracing.enabled needs tracing.endpoint (your collector's OTLP/HTTP address, e.g. http://otel-collector:4318)" }}{{ end }}
- name: OTEL_TRACES_EXPORTER
  value: otlp
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ $t.endpoint | quote }}
- name: OTEL_EXPORTER_OTLP_PROTOCOL
  value: http/protobuf
- name: OTEL_SERVICE_NAME
  value: {{ .service | quote }}
- name: OTEL_TRACES_SAMPLER
  value: {{ $t.sampler | quote }}
{{- with $t.samplerArg }}
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ . | quote }}
{{- end }}
{{- $attrs := list }}
{{- if .pod }}{{ $attrs = append $attrs "k8s.pod.name=$(POD_NAME),k8s.namespace.name=$(POD_NAMESPACE)" }}{{ end }}
{{- range $k, $v := $t.resourceAttributes }}{{ $attrs = append $attrs (printf "%s=%s" $k $v) }}{{ end }}
{{- with $attrs }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ join "," . | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The effective queues as YAML: the `queues:` value, or the demo queues when it is empty */}}
{{- define "arqscale.queues" -}}
{{- if .Values.queues -}}
{{- toYaml .Values.queues -}}
{{- else -}}
{{- toYaml (.Files.Get "files/demo-queues.yaml" | fromYaml).queues -}}
{{- end -}}
{{- end -}}

{{/* The queues file: the effective queues without the chart-only `worker:` maps */}}
{{- define "arqscale.queuesFile" -}}
{{- $queues := dict -}}
{{- range $name, $q := include "arqscale.queues" . | fromYaml -}}
{{- $_ := set $queues $name (omit ($q | default dict) "worker") -}}
{{- end -}}
{{- toYaml (dict "queues" $queues) -}}
{{- end -}}

{{- define "arqscale.serviceAccountName" -}}
{{- $sa := index .root.Values .component "serviceAccount" -}}
{{- if $sa.create -}}
{{- $sa.name | default (include "arqscale.componentName" .) -}}
{{- else -}}
{{- $sa.name | default "default" -}}
{{- end -}}
{{- end -}}

{{- define "arqscale.metricNames" -}}
waiting: bullmq_queue_waiting
backlog: arqscale_queue_backlog
oldest_waiting: arqscale_queue_oldest_waiting_seconds
wait_target: arqscale_queue_wait_target_workers
{{- end -}}

{{/* Field of the exporter's /keda/v1/queues/<name> JSON for each metric hint */}}
{{- define "arqscale.kedaFields" -}}
waiting: waiting
backlog: backlog
oldest_waiting: oldest_waiting_seconds
wait_target: wait_target_workers
{{- end -}}

{{/* Metrics API TLS ---------------------------------------------------------------------------- */}}

{{/*
The serving pair of the External Metrics API as YAML {caBundle, crt, key, generated}: base64 values.
Generated (genCA) unless existingSecret or cert-manager supplies it; a generated pair is reused from
the live Secret on upgrade (lookup; nothing under `helm template`). Call it ONCE per render, in the
one template that writes the Secret, the APIService and the pod checksum: genCA is random.
*/}}
{{- define "arqscale.metricsApiTls" -}}
{{- $m := .Values.metricsApi -}}
{{- $svc := include "arqscale.componentName" (dict "root" . "component" "exporter") -}}
{{- $out := dict "caBundle" "" "crt" "" "key" "" "generated" false -}}
{{- if $m.tls.certManager.enabled -}}
{{- else if $m.tls.existingSecret -}}
{{- $_ := set $out "caBundle" $m.tls.caBundle -}}
{{- if and (not $m.tls.caBundle) (not (hasKey $m.apiServiceAnnotations "cert-manager.io/inject-ca-from")) -}}
{{- fail "metricsApi.tls.caBundle: required with metricsApi.tls.existingSecret (base64 PEM of the CA that signed it), unless a cert-manager.io/inject-ca-from annotation fills it" -}}
{{- end -}}
{{- else -}}
{{- $secretName := include "arqscale.componentName" (dict "root" . "component" "metrics-api-tls") -}}
{{- $live := lookup "v1" "Secret" .Release.Namespace $secretName -}}
{{- $_ := set $out "generated" true -}}
{{- if and $live $live.data (hasKey $live.data "ca.crt") (hasKey $live.data "tls.crt") (hasKey $live.data "tls.key") -}}
{{- $_ := set $out "caBundle" (index $live.data "ca.crt") -}}
{{- $_ := set $out "crt" (index $live.data "tls.crt") -}}
{{- $_ := set $out "key" (index $live.data "tls.key") -}}
{{- else -}}
{{- $ca := genCA (printf "%s-metrics-api-ca" $svc) (int $m.tls.validityDays) -}}
{{- $dns := list $svc (printf "%s.%s" $svc .Release.Namespace) (printf "%s.%s.svc" $svc .Release.Namespace) (printf "%s.%s.svc.cluster.local" $svc .Release.Namespace) -}}
{{- $cert := genSignedCert (printf "%s.%s.svc" $svc .Release.Namespace) nil $dns (int $m.tls.validityDays) $ca -}}
{{- $_ := set $out "caBundle" ($ca.Cert | b64enc) -}}
{{- $_ := set $out "crt" ($cert.Cert | b64enc) -}}
{{- $_ := set $out "key" ($cert.Key | b64enc) -}}
{{- end -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}

{{- define "arqscale.metricsApiTlsSecretName" -}}
{{- if .Values.metricsApi.tls.existingSecret -}}
{{- .Values.metricsApi.tls.existingSecret -}}
{{- else -}}
{{- include "arqscale.componentName" (dict "root" . "component" "metrics-api-tls") -}}
{{- end -}}
{{- end -}}

{{/* The namespaces the exporter answers metric requests for: metricsApi.namespaces or the release's */}}
{{- define "arqscale.metricsApiNamespaces" -}}
{{- .Values.metricsApi.namespaces | default (list .Release.Namespace) | join "," -}}
{{- end -}}

{{/* "true" when the webhook deliverer runs: webhooks.enabled, or (when null) any queue declaring webhooks */}}
{{- define "arqscale.webhooksEnabled" -}}
{{- $on := .Values.webhooks.enabled -}}
{{- if kindIs "invalid" $on -}}
{{- $on = false -}}
{{- range $name, $q := include "arqscale.queues" . | fromYaml -}}
{{- $hooks := (($q | default dict).webhooks | default dict) -}}
{{- if or $hooks.endpoints $hooks.callbacks -}}{{- $on = true -}}{{- end -}}
{{- end -}}
{{- end -}}
{{- ternary "true" "false" (and $on true) -}}
{{- end -}}
