{{/* Chart name, truncated to a DNS label. */}}
{{- define "r1forge-serving.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: release name, plus the chart name unless the release has it. */}}
{{- define "r1forge-serving.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "r1forge-serving.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels of the server pods. */}}
{{- define "r1forge-serving.selectorLabels" -}}
app.kubernetes.io/name: {{ include "r1forge-serving.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: server
{{- end }}

{{/* Common labels (the component label is set by each template). */}}
{{- define "r1forge-serving.commonLabels" -}}
helm.sh/chart: {{ include "r1forge-serving.chart" . }}
app.kubernetes.io/name: {{ include "r1forge-serving.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ include "r1forge-serving.imageTag" . | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: r1forge
r1forge.io/model: {{ .Values.model.name | quote }}
{{- end }}

{{- define "r1forge-serving.labels" -}}
{{ include "r1forge-serving.commonLabels" . }}
app.kubernetes.io/component: server
{{- end }}

{{- define "r1forge-serving.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "r1forge-serving.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Pinned image tag: image.tag, else the chart's appVersion; never `latest`. */}}
{{- define "r1forge-serving.imageTag" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag | toString }}
{{- if eq $tag "latest" }}
{{- fail "image.tag must be pinned: `latest` is not allowed" }}
{{- end }}
{{- $tag }}
{{- end }}

{{/* The serving image (also the helm test pod's, and the init container's unless fetch.image
     names one): repository@digest when image.digest is set, else repository:tag. */}}
{{- define "r1forge-serving.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (include "r1forge-serving.imageTag" .) }}
{{- end }}
{{- end }}

{{/* The model-fetch init container's image: fetch.image when its repository is set (pinned by
     digest, else by tag), else the serving image. */}}
{{- define "r1forge-serving.fetchImage" -}}
{{- with .Values.fetch.image }}
{{- if not .repository }}
{{- include "r1forge-serving.image" $ }}
{{- else if .digest }}
{{- printf "%s@%s" .repository .digest }}
{{- else }}
{{- printf "%s:%s" .repository (toString .tag) }}
{{- end }}
{{- end }}
{{- end }}

{{/* "true" when every image of the Deployment is pinned by digest. */}}
{{- define "r1forge-serving.deploymentDigests" -}}
{{- if and .Values.image.digest (or (not .Values.fetch.image.repository) .Values.fetch.image.digest) }}true{{ end }}
{{- end }}

{{/* Value of the checkov.io/skip annotation for CKV_K8S_43 (image by digest), set only on the
     objects whose images are pinned by tag (the default): with image.digest (and
     fetch.image.digest) set the check runs and passes. No "=" in the reason (checkov splits on it). */}}
{{- define "r1forge-serving.digestSkip" -}}
CKV_K8S_43=pinned by tag (never latest) until image.digest is set, as the digest exists only once the release image is pushed
{{- end }}

{{/* "true" when model.uri is fetched over the network (s3://, gs://, dvc://); "" when it is
     local to the cluster (pvc://, file:///). */}}
{{- define "r1forge-serving.remoteModel" -}}
{{- if regexMatch "^(s3|gs|dvc)://" .Values.model.uri }}true{{ end }}
{{- end }}

{{/* "true" when the pod's NetworkPolicy opens egress for the model fetch:
     networkPolicy.egress.modelFetch.enabled true, or auto with a remote model.uri. */}}
{{- define "r1forge-serving.fetchEgress" -}}
{{- $enabled := .Values.networkPolicy.egress.modelFetch.enabled }}
{{- if kindIs "bool" $enabled }}
{{- if $enabled }}true{{ end }}
{{- else if include "r1forge-serving.remoteModel" . }}true{{ end }}
{{- end }}

{{/* Model folder inside the pod. */}}
{{- define "r1forge-serving.modelDir" -}}
{{- printf "/models/%s" .Values.model.name }}
{{- end }}

{{/* The PVC holding the model for pvc://CLAIM/SUB/PATH uris ("" for other schemes). */}}
{{- define "r1forge-serving.modelClaim" -}}
{{- if hasPrefix "pvc://" .Values.model.uri }}
{{- .Values.model.uri | trimPrefix "pvc://" | splitList "/" | first }}
{{- end }}
{{- end }}

{{/* Effective --dtype: in cpu mode `auto` becomes cpu.dtype. */}}
{{- define "r1forge-serving.dtype" -}}
{{- if and (eq .Values.mode "cpu") (eq .Values.vllm.dtype "auto") }}
{{- .Values.cpu.dtype }}
{{- else }}
{{- .Values.vllm.dtype }}
{{- end }}
{{- end }}

{{/* Environment shared by all containers of the pod: caches under the writable /cache. */}}
{{- define "r1forge-serving.cacheEnv" -}}
- name: HOME
  value: /cache
- name: XDG_CACHE_HOME
  value: /cache
- name: XDG_CONFIG_HOME
  value: /cache/config
- name: HF_HOME
  value: /cache/huggingface
- name: VLLM_CACHE_ROOT
  value: /cache/vllm
- name: VLLM_CONFIG_ROOT
  value: /cache/config/vllm
- name: TRITON_CACHE_DIR
  value: /cache/triton
- name: TORCHINDUCTOR_CACHE_DIR
  value: /cache/torchinductor
- name: NUMBA_CACHE_DIR
  value: /cache/numba
- name: VLLM_NO_USAGE_STATS
  value: "1"
- name: DO_NOT_TRACK
  value: "1"
{{- /* The pod's uid (10001 by default) has no passwd entry; getpass.getuser() reads $USER. */}}
- name: USER
  value: r1forge
{{- end }}

{{/* Probe timings from probes.<kind>, always GET /health on the http port. */}}
{{- define "r1forge-serving.probe" -}}
httpGet:
  path: /health
  port: http
periodSeconds: {{ .periodSeconds }}
timeoutSeconds: {{ .timeoutSeconds }}
failureThreshold: {{ .failureThreshold }}
{{- with .initialDelaySeconds }}
initialDelaySeconds: {{ . }}
{{- end }}
{{- end }}

{{/* Fail early on combinations the schema cannot express well. */}}
{{- define "r1forge-serving.validate" -}}
{{- if and .Values.autoscaling.enabled (eq .Values.autoscaling.engine "hpa") (lt (int .Values.autoscaling.minReplicas) 1) }}
{{- fail "autoscaling.minReplicas must be >= 1 with the hpa engine (scale to zero needs keda)" }}
{{- end }}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- fail "autoscaling.minReplicas must not exceed autoscaling.maxReplicas" }}
{{- end }}
{{- if and .Values.apiKey.create (not .Values.apiKey.value) }}
{{- fail "apiKey.value is required when apiKey.create is true" }}
{{- end }}
{{- with .Values.fetch.image }}
{{- if and (not .repository) (or .tag .digest) }}
{{- fail "fetch.image.tag and fetch.image.digest need fetch.image.repository (without it the init container runs the serving image, pinned by image.tag / image.digest)" }}
{{- end }}
{{- if and .repository (not .tag) (not .digest) }}
{{- fail "fetch.image.repository needs fetch.image.tag or fetch.image.digest (pin the fetch image)" }}
{{- end }}
{{- end }}
{{- end }}
