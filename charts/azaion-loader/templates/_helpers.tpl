{{/*
Names, labels and guards shared by the templates.
*/}}

{{/* The API group of the CRDs in crds/ (a test checks they agree). */}}
{{- define "azaion-loader.crdGroup" -}}
loader.azaion.com
{{- end }}

{{- define "azaion-loader.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "azaion-loader.fullname" -}}
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

{{- define "azaion-loader.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "azaion-loader.selectorLabels" -}}
app.kubernetes.io/name: {{ include "azaion-loader.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "azaion-loader.labels" -}}
helm.sh/chart: {{ include "azaion-loader.chart" . }}
{{ include "azaion-loader.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "azaion-loader.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "azaion-loader.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The operator's image reference: repository with digest, or with tag (appVersion by default). */}}
{{- define "azaion-loader.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The Jobs' image: jobs.image, or the operator's image. */}}
{{- define "azaion-loader.jobImage" -}}
{{- default (include "azaion-loader.image" .) .Values.jobs.image }}
{{- end }}

{{/* Names of pull Secrets given as `[{name: x}]` or `[x]`, one per line. */}}
{{- define "azaion-loader.pullSecretNames" -}}
{{- range . }}
{{ if kindIs "map" . }}{{ .name }}{{ else }}{{ . }}{{ end }}
{{- end }}
{{- end }}

{{/* Whether the operator watches all namespaces. */}}
{{- define "azaion-loader.clusterWide" -}}
{{- if empty .Values.watchNamespaces }}true{{- end }}
{{- end }}

{{/*
Guards for combinations the schema cannot express. Included once, from the
Deployment, so `helm template` and `helm install` stop with a clear message.
*/}}
{{- define "azaion-loader.validate" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.peering.enabled) }}
{{- fail "replicaCount > 1 needs peering.enabled=true: without kopf peering every replica would act on every object" }}
{{- end }}
{{- if ne (len .Values.watchNamespaces) (len (uniq .Values.watchNamespaces)) }}
{{- fail "watchNamespaces lists a namespace twice" }}
{{- end }}
{{- if and .Values.metrics.port (eq (int .Values.metrics.port) (int .Values.operator.livenessPort)) }}
{{- fail "metrics.port and operator.livenessPort are the same port: give them different ones" }}
{{- end }}
{{- if and .Values.jobs.caBundle.configMap .Values.jobs.caBundle.secret }}
{{- fail "jobs.caBundle: set configMap or secret, not both" }}
{{- end }}
{{- /* The operator's settings reader refuses these too (settings.RESERVED_*); a test ties the lists. */}}
{{- $reservedEnv := list "HOME" "LOADER_API_URL" "LOADER_CA_BUNDLE" "LOADER_CREDENTIALS_DIR" "LOADER_EMAIL" "LOADER_PASSWORD" "LOADER_HW_MACHINE_ID" "LOADER_HW_ARCH" "LOADER_LOG_LEVEL" "LOADER_LOG_FORMAT" "HTTP_PROXY" "HTTPS_PROXY" "NO_PROXY" "ALL_PROXY" "REQUESTS_CA_BUNDLE" "CURL_CA_BUNDLE" "SSL_CERT_FILE" "SSL_CERT_DIR" }}
{{- range .Values.jobs.extraEnv }}
{{- if has (upper .name) $reservedEnv }}
{{- fail (printf "jobs.extraEnv: %s is set by the operator (credentials, where they go, the fingerprint or logging) and cannot be replaced" .name) }}
{{- end }}
{{- end }}
{{- $reservedVolumes := list "target" "results" "tmp" "work" "credentials" "ca-bundle" "runtime-socket" }}
{{- range .Values.jobs.extraVolumes }}
{{- if has .name $reservedVolumes }}
{{- fail (printf "jobs.extraVolumes: %s is a volume of the Jobs" .name) }}
{{- end }}
{{- end }}
{{- if and (not .Values.serviceAccount.create) .Values.rbac.create (not .Values.serviceAccount.name) }}
{{- fail "rbac.create=true with serviceAccount.create=false needs serviceAccount.name (the account to bind)" }}
{{- end }}
{{- end }}

{{/*
RBAC rules the operator needs in each namespace it watches, verb by verb from
operator/azaion_operator (kube.py, handlers.py) and kopf:
  custom resources: kopf lists, watches and patches them (progress annotations);
    kube.py gets and lists them; status: kube.py merge-patches it.
  jobs: kube.py lists and watches ours (jobwatch.py), gets, creates, deletes them.
  pods: kube.py lists a Job's pods for their termination messages.
  events: kopf.event creates them (kube.py outside kopf's handlers).
  persistentvolumeclaims: kube.py gets a target claim (does it exist, its volume).
  secrets: kube.py gets the credentials Secret to check its key names (never keeps
    a value), and only the names the policy allows (`resourceNames`): the default
    and policy.credentialsSecrets, the same list the operator enforces.
*/}}
{{- define "azaion-loader.namespacedRules" -}}
{{- $group := include "azaion-loader.crdGroup" . }}
- apiGroups: [{{ $group | quote }}]
  resources: ["resources", "imageunlocks"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: [{{ $group | quote }}]
  resources: ["resources/status", "imageunlocks/status"]
  verbs: ["patch"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "delete"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get"]
- apiGroups: [""]
  resources: ["secrets"]
  resourceNames: {{ include "azaion-loader.credentialsSecrets" . }}
  verbs: ["get"]
{{- end }}

{{/*
The credentials Secrets custom resources may use, as a JSON list, the default
first (an empty defaults.credentialsSecret is the operator's default name).
Never empty: an empty resourceNames would grant every Secret.
*/}}
{{- define "azaion-loader.credentialsSecrets" -}}
{{- $default := .Values.defaults.credentialsSecret | default "azaion-loader-credentials" }}
{{- prepend .Values.policy.credentialsSecrets $default | uniq | toJson }}
{{- end }}

{{/*
A URL normalised as policy.normalise_url does: scheme and host in lower case,
no trailing slash in the path, no empty `?` or `#`. The admission policy
normalises spec.apiUrl the same way in CEL (its variables); the CRD's pattern
guarantees a lower-case `http://` or `https://` and no whitespace, and the
schema keeps user info out of the allowed URLs, so lower-casing the whole
authority is the same comparison.
*/}}
{{- define "azaion-loader.normaliseUrl" -}}
{{- $authority := regexFind "^https?://[^/?#]*" . }}
{{- $rest := trimPrefix $authority . }}
{{- $path := regexFind "^[^?#]*" $rest }}
{{- $query := regexFind "^[?][^#]*" (trimPrefix $path $rest) }}
{{- $fragment := regexFind "#.*" $rest }}
{{- lower $authority }}{{ regexFind "^.*[^/]" $path }}{{ if gt (len $query) 1 }}{{ $query }}{{ end }}{{ if gt (len $fragment) 1 }}{{ $fragment }}{{ end }}
{{- end }}

{{/* The allowed API URLs (defaults.apiUrl first), normalised, as a JSON list. */}}
{{- define "azaion-loader.normalisedUrls" -}}
{{- $urls := list }}
{{- range prepend .Values.policy.allowedApiUrls .Values.defaults.apiUrl | compact }}
{{- $urls = append $urls (include "azaion-loader.normaliseUrl" .) }}
{{- end }}
{{- $urls | uniq | toJson }}
{{- end }}

{{/* policy.hostPathPrefixes normalised as policy.normalise_path does, as a JSON list. */}}
{{- define "azaion-loader.normalisedPrefixes" -}}
{{- $prefixes := list }}
{{- range .Values.policy.hostPathPrefixes }}
{{- $prefixes = append $prefixes (printf "/%s" (splitList "/" . | compact | join "/")) }}
{{- end }}
{{- $prefixes | uniq | toJson }}
{{- end }}

{{/* The ValidatingAdmissionPolicy rules both kinds share, in policy.check_api_url's order. */}}
{{- define "azaion-loader.vapApiUrlAndSecret" -}}
{{- $default := .Values.defaults.apiUrl }}
{{- if not $default }}
- expression: "has(object.spec.apiUrl)"
  reason: Invalid
  message: "defaults.apiUrl: no API URL: spec.apiUrl is unset and the operator has no default; the cluster admin sets defaults.apiUrl"
{{- end }}
- expression: {{ printf "variables.url == '' || variables.normalisedUrl in %s" (include "azaion-loader.normalisedUrls" .) | quote }}
  reason: Forbidden
  message: "policy.allowedApiUrls: spec.apiUrl is not an allowed API URL (the operator's defaults.apiUrl or policy.allowedApiUrls): remove spec.apiUrl, or ask the cluster admin to list it"
{{- if not .Values.policy.allowInsecureHttp }}
- expression: {{ printf "has(object.spec.apiUrl) ? object.spec.apiUrl.startsWith('https://') : %t" (hasPrefix "https://" $default) | quote }}
  reason: Forbidden
  message: "policy.allowInsecureHttp: the API URL (spec.apiUrl, or the operator's defaults.apiUrl) is not https, so the credentials would cross the network unencrypted: use an https URL, or the cluster admin sets policy.allowInsecureHttp=true (test clusters only)"
{{- end }}
- expression: {{ printf "variables.secretName == '' || variables.secretName in %s" (include "azaion-loader.credentialsSecrets" .) | quote }}
  reason: Forbidden
  message: {{ printf "policy.credentialsSecrets: spec.credentialsSecretRef.name is not an allowed credentials Secret (allowed: %s): remove spec.credentialsSecretRef, or ask the cluster admin to list it" (include "azaion-loader.credentialsSecrets" . | fromJsonArray | join ", ") | quote }}
{{- end }}
