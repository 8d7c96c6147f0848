{{/* The release's full name: "fauna" for a release named fauna, else <release>-fauna. */}}
{{- define "fauna.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "fauna.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "fauna.labels" -}}
{{ include "fauna.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "fauna.serviceAccountName" -}}
{{- default (include "fauna.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{/* The image tag: image.tag, else the chart's appVersion (`make chart` packages the
     chart with the tag `make push` pushed), except when both digests pin the images. */}}
{{- define "fauna.tag" -}}
{{- $digest := .Values.image.digest | default dict -}}
{{- if .Values.image.tag -}}
{{- .Values.image.tag -}}
{{- else if not (and (index $digest "cpu") (index $digest "gpu")) -}}
{{- .Chart.AppVersion -}}
{{- end -}}
{{- end -}}

{{/* Images: one registry and tag for both, as `make image` builds them; a digest,
     when given, pins the content (`name:tag@sha256:...`, or `name@sha256:...`). */}}
{{- define "fauna.image" -}}
{{- $root := index . 0 -}}
{{- $name := printf "%s/fauna-%s" $root.Values.image.registry (index . 1) -}}
{{- $digest := index ($root.Values.image.digest | default dict) (index . 1) | default "" -}}
{{- with include "fauna.tag" $root }}{{ $name = printf "%s:%s" $name . }}{{ end -}}
{{- with $digest }}{{ $name = printf "%s@%s" $name . }}{{ end -}}
{{- $name -}}
{{- end -}}
{{- define "fauna.imageCpu" -}}
{{- include "fauna.image" (list . "cpu") -}}
{{- end -}}
{{- define "fauna.imageGpu" -}}
{{- include "fauna.image" (list . "gpu") -}}
{{- end -}}
{{/* What names the pipeline version the CronJob submits: the tag (the git SHA), else the
     CPU image's digest. */}}
{{- define "fauna.revision" -}}
{{- if include "fauna.tag" . -}}
{{- include "fauna.tag" . -}}
{{- else -}}
{{- (index (.Values.image.digest | default dict) "cpu" | default "") | replace "sha256:" "sha256-" | trunc 19 -}}
{{- end -}}
{{- end -}}

{{/* Secrets: the one named in values, else the one this chart creates. */}}
{{- define "fauna.s3SecretName" -}}
{{- default (printf "%s-s3" (include "fauna.fullname" .)) .Values.s3.existingSecret -}}
{{- end -}}
{{- define "fauna.kaggleSecretName" -}}
{{- default (printf "%s-kaggle" (include "fauna.fullname" .)) .Values.kaggle.existingSecret -}}
{{- end -}}

{{/* The S3 endpoint URL: explicit, else the bundled MinIO, else "" (AWS S3). */}}
{{- define "fauna.s3Endpoint" -}}
{{- if .Values.s3.endpoint -}}
{{- .Values.s3.endpoint -}}
{{- else if .Values.minio.enabled -}}
{{- printf "http://%s-minio.%s.svc:9000" (include "fauna.fullname" .) .Release.Namespace -}}
{{- else if .Values.seaweedfs.enabled -}}
{{- printf "http://%s-seaweedfs.%s.svc:8333" (include "fauna.fullname" .) .Release.Namespace -}}
{{- end -}}
{{- end -}}

{{/* The bundled object store, if any: minio or seaweedfs (the schema allows one). */}}
{{- define "fauna.store" -}}
{{- if .Values.minio.enabled }}minio{{ else if .Values.seaweedfs.enabled }}seaweedfs{{ end -}}
{{- end -}}

{{- define "fauna.forcePathStyle" -}}
{{- if kindIs "bool" .Values.s3.forcePathStyle -}}
{{- .Values.s3.forcePathStyle -}}
{{- else -}}
{{- ne (include "fauna.s3Endpoint" .) "" -}}
{{- end -}}
{{- end -}}

{{- define "fauna.pipelineRoot" -}}
{{- default (printf "s3://%s/pipeline-root" .Values.s3.bucket) .Values.kfp.launcher.pipelineRoot -}}
{{- end -}}

{{/* Environment for anything that talks to the bucket through fauna's storage layer. */}}
{{- define "fauna.s3Env" -}}
- name: AWS_REGION
  value: {{ .Values.s3.region | quote }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ include "fauna.s3SecretName" . }}
      key: AWS_ACCESS_KEY_ID
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "fauna.s3SecretName" . }}
      key: AWS_SECRET_ACCESS_KEY
{{- with include "fauna.s3Endpoint" . }}
- name: S3_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
{{- end -}}

{{/* The parameters the CronJob submits: values.params plus what the chart decides. */}}
{{- define "fauna.params" -}}
{{- $pipeline := dict
      "bucket" .Values.s3.bucket
      "image_cpu" (include "fauna.imageCpu" .)
      "image_gpu" (include "fauna.imageGpu" .)
      "s3_secret" (include "fauna.s3SecretName" .)
      "kaggle_secret" (include "fauna.kaggleSecretName" .) -}}
{{- with .Values.image.pullSecrets }}{{ $_ := set $pipeline "image_pull_secrets" . }}{{ end -}}
{{- $params := mergeOverwrite (deepCopy (.Values.params | default dict)) (dict "pipeline" (mergeOverwrite (deepCopy (dig "pipeline" dict (.Values.params | default dict))) $pipeline)) -}}
{{- if .Values.modelRegistry.enabled }}
{{- $_ := set $params "model_registry" (mergeOverwrite (deepCopy (dig "model_registry" dict (.Values.params | default dict))) (dict "url" .Values.modelRegistry.url)) -}}
{{- end }}
{{- toYaml $params -}}
{{- end -}}

{{/* Security: every pod non-root with the runtime's default seccomp profile. */}}
{{- define "fauna.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Every container: no privilege escalation, no capabilities, read-only root (scratch in /tmp). */}}
{{- define "fauna.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: ["ALL"]
{{- end -}}

{{/* Istio: a Job's pod completes only when every container exits (istio/istio#11045).
     Off: no sidecar. On: fauna starts once the proxy is ready and stops it when done. */}}
{{- define "fauna.istioLabels" -}}
{{- if not .Values.istio.sidecarInjection -}}
sidecar.istio.io/inject: "false"
{{- end -}}
{{- end -}}
{{- define "fauna.istioAnnotations" -}}
{{- if .Values.istio.sidecarInjection -}}
proxy.istio.io/config: '{"holdApplicationUntilProxyStarts": true}'
{{- end -}}
{{- end -}}

{{/* How long the CronJob's Job may run: a run and all its retries, the formula of
     fauna.pipelines.kfp_objects.run_deadline_seconds over params.pipeline (defaults as
     fauna.config.PipelineConfig's; tests/test_chart.py keeps the two equal):
     (run_retries + 1) x (train_timeout + 7 x step_timeout + 3600). A smaller
     schedule.activeDeadlineSeconds would end the Job before the run's last retry. */}}
{{- define "fauna.activeDeadlineSeconds" -}}
{{- $p := dig "pipeline" dict (.Values.params | default dict) -}}
{{- $train := int64 (dig "train_timeout_seconds" 86400 $p) -}}
{{- $step := int64 (dig "step_timeout_seconds" 14400 $p) -}}
{{- $attempts := add1 (int64 (dig "run_retries" 2 $p)) -}}
{{- $needed := mul $attempts (add $train (mul 7 $step) 3600) -}}
{{- $given := .Values.schedule.activeDeadlineSeconds -}}
{{- if and $given (lt (int64 $given) (int64 $needed)) -}}
{{- fail (printf "schedule.activeDeadlineSeconds %d is shorter than the run may take with its retries: %d s = (params.pipeline.run_retries + 1) x (train_timeout_seconds + 7 x step_timeout_seconds + 3600); leave it null (derived) or raise it" (int64 $given) (int64 $needed)) -}}
{{- end -}}
{{- $given | default $needed | int64 -}}
{{- end -}}
