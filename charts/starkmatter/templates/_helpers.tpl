{{/* Common names, labels and pod pieces shared by every template. */}}

{{- define "starkmatter.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "starkmatter.labels" -}}
app.kubernetes.io/name: starkmatter
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/part-of: starkmatter
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{- define "starkmatter.selector" -}}
app.kubernetes.io/name: starkmatter
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "starkmatter.databaseSecret" -}}
{{ .Values.database.existingSecret | default "starkmatter-database" }}
{{- end -}}
{{- define "starkmatter.databaseKey" -}}
{{ if .Values.database.existingSecret }}{{ .Values.database.existingSecretKey }}{{ else }}url{{ end }}
{{- end -}}
{{- define "starkmatter.redisSecret" -}}
{{ .Values.redis.existingSecret | default "starkmatter-redis" }}
{{- end -}}
{{- define "starkmatter.redisKey" -}}
{{ if .Values.redis.existingSecret }}{{ .Values.redis.existingSecretKey }}{{ else }}url{{ end }}
{{- end -}}
{{- define "starkmatter.jwtSecret" -}}
{{ .Values.jwt.existingSecret | default "starkmatter-jwt" }}
{{- end -}}

{{/* The Pod Security "restricted" profile. */}}
{{- define "starkmatter.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .uid | default 10001 }}
runAsGroup: {{ .uid | default 10001 }}
fsGroup: {{ .uid | default 10001 }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "starkmatter.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "starkmatter.probes" -}}
startupProbe:
  httpGet: {path: /healthz, port: {{ .port }}}
  periodSeconds: 2
  failureThreshold: 60
livenessProbe:
  httpGet: {path: /healthz, port: {{ .port }}}
  periodSeconds: 10
  failureThreshold: 3
readinessProbe:
  httpGet: {path: /readyz, port: {{ .port }}}
  periodSeconds: 5
  failureThreshold: 2
{{- end -}}

{{/* Environment every platform process gets: secrets by reference only. */}}
{{- define "starkmatter.env" -}}
- name: STARKMATTER_ENV
  value: prod
{{- /* servers and probes listen on the pod's address, not only on its loopback */}}
- name: STARKMATTER_API_HOST
  value: 0.0.0.0
- name: STARKMATTER_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "starkmatter.databaseSecret" . }}
      key: {{ include "starkmatter.databaseKey" . }}
- name: STARKMATTER_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "starkmatter.redisSecret" . }}
      key: {{ include "starkmatter.redisKey" . }}
- name: STARKMATTER_JWT_PUBLIC_KEY_FILE
  value: /etc/starkmatter/jwt/public.pem
- name: STARKMATTER_METRICS_PORT
  value: "9100"
- name: ANTHROPIC_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.anthropic.existingSecret | default "starkmatter-anthropic" }}
      key: {{ .Values.anthropic.existingSecretKey }}
      optional: true
{{- end -}}

{{/*
A platform Deployment. Arguments (a dict): root, component, args, values (replicas,
resources), port and portName (the probed port), metrics (true: the process also serves
/metrics on its own port 9100, named metrics, apart from the probed one), extraEnv,
extraMounts, extraVolumes.
*/}}
{{- define "starkmatter.deployment" -}}
{{- $root := .root -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $root.Release.Name }}-{{ .component }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "starkmatter.labels" . | nindent 4 }}
spec:
  {{- if not .autoscaled }}
  replicas: {{ .replicas }}
  {{- end }}
  revisionHistoryLimit: 3
  {{- if .recreate }}
  strategy:
    type: Recreate
  {{- end }}
  selector:
    matchLabels:
      {{- include "starkmatter.selector" . | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "starkmatter.labels" . | nindent 8 }}
      annotations:
        checksum/secrets: {{ include (print $root.Template.BasePath "/platform-secret.yaml") $root | sha256sum | trunc 16 }}
    spec:
      automountServiceAccountToken: false
      enableServiceLinks: false
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- include "starkmatter.podSecurityContext" (dict) | nindent 8 }}
      containers:
        - name: {{ .component }}
          image: {{ include "starkmatter.image" $root }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          args: {{ toJson .args }}
          env:
            {{- include "starkmatter.env" $root | nindent 12 }}
            {{- with .extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          ports:
            - name: {{ .portName }}
              containerPort: {{ .port }}
              protocol: TCP
            {{- if .metrics }}
            - name: metrics
              containerPort: 9100
              protocol: TCP
            {{- end }}
          {{- include "starkmatter.probes" (dict "port" .portName) | nindent 10 }}
          resources:
            {{- toYaml .values.resources | nindent 12 }}
          securityContext:
            {{- include "starkmatter.containerSecurityContext" . | nindent 12 }}
          terminationMessagePolicy: FallbackToLogsOnError
          volumeMounts:
            - {name: tmp, mountPath: /tmp}
            - {name: jwt, mountPath: /etc/starkmatter/jwt, readOnly: true}
            {{- with .extraMounts }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
      volumes:
        - name: tmp
          emptyDir: {sizeLimit: 64Mi}
        - name: jwt
          secret:
            secretName: {{ include "starkmatter.jwtSecret" $root }}
            optional: true
            items:
              - {key: public.pem, path: public.pem}
              {{- if .jwtPrivate }}
              - {key: private.pem, path: private.pem}
              {{- end }}
        {{- with .extraVolumes }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
{{- end -}}

{{- define "starkmatter.pdb" -}}
{{- if and .root.Values.podDisruptionBudget.enabled (gt (int .replicas) 1) }}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ .root.Release.Name }}-{{ .component }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "starkmatter.labels" . | nindent 4 }}
spec:
  maxUnavailable: 1
  selector:
    matchLabels:
      {{- include "starkmatter.selector" . | nindent 6 }}
{{- end }}
{{- end -}}

{{- define "starkmatter.hpa" -}}
{{- if .values.autoscaling.enabled }}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ .root.Release.Name }}-{{ .component }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "starkmatter.labels" . | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ .root.Release.Name }}-{{ .component }}
  minReplicas: {{ .values.autoscaling.minReplicas }}
  maxReplicas: {{ .values.autoscaling.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ .values.autoscaling.targetCPUUtilizationPercentage }}
{{- end }}
{{- end -}}

{{- define "starkmatter.service" -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ .root.Release.Name }}-{{ .component }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "starkmatter.labels" . | nindent 4 }}
spec:
  type: ClusterIP
  selector:
    {{- include "starkmatter.selector" . | nindent 4 }}
  ports:
    - name: {{ .portName }}
      port: {{ .port }}
      targetPort: {{ .portName }}
      protocol: TCP
    {{- if .metrics }}
    - name: metrics
      port: 9100
      targetPort: metrics
      protocol: TCP
    {{- end }}
{{- end -}}

{{/*
The bundled Redis server's password: the value if given, else the one an earlier install
generated (so an upgrade keeps it), else a new random one. Remembered for the rest of the
render, so the Secrets and the checksum annotations all see the same password.
*/}}
{{- define "starkmatter.postgresPassword" -}}
{{- /* Like the Redis password: a value, else the one in the existing Secret (an upgrade must
       not change it: the data directory keeps the first), else a random one. */}}
{{- $pg := .Values.postgresql -}}
{{- if not $pg.password -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (printf "%s-postgresql" .Release.Name) -}}
{{- if and $existing $existing.data $existing.data.password -}}
{{- $_ := set $pg "password" (b64dec $existing.data.password) -}}
{{- else -}}
{{- $_ := set $pg "password" (randAlphaNum 32) -}}
{{- end -}}
{{- end -}}
{{- $pg.password -}}
{{- end -}}

{{- define "starkmatter.redisPassword" -}}
{{- $rd := .Values.redisServer -}}
{{- if not $rd.password -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (printf "%s-redis-auth" .Release.Name) -}}
{{- if and $existing $existing.data $existing.data.password -}}
{{- $_ := set $rd "password" (b64dec $existing.data.password) -}}
{{- else -}}
{{- $_ := set $rd "password" (randAlphaNum 32) -}}
{{- end -}}
{{- end -}}
{{- $rd.password -}}
{{- end -}}
