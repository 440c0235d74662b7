{{/*
What the engine-run jobs share: `python -m jobs historical` (historical.yaml) and `python -m jobs
features` (featurejob.yaml) run on DuckDB or numpy in a pod, on Spark in client mode in a pod, or on
Spark through the Spark operator. Their values blocks have the same shape: engine, image,
duckdb.memoryLimit, spark.{image, localCores, sparkVersion, serviceAccount, driver, executor}, resources.
*/}}

{{/* The offline store and the feature repository, for the pod, or the Spark driver and executors */}}
{{- define "ml-platform.jobs.env" -}}
- name: FEATURES_OFFLINE_URL
  value: {{ .Values.featurestore.offline.url | quote }}
- name: FEATURES_REPO
  value: {{ .Values.featurestore.repo | quote }}
{{- with .Values.global.s3.endpointUrl }}
- name: AWS_ENDPOINT_URL_S3
  value: {{ . | quote }}
{{- end }}
- name: AWS_DEFAULT_REGION
  value: {{ .Values.global.s3.region | quote }}
{{- end }}

{{/*
The engine's own arguments, a YAML list (read it back with fromYamlArray): dict "values" $v "operator" bool.
DuckDB with a memory limit spills to the pod's emptyDir; Spark in a pod (no operator) runs local[N].
*/}}
{{- define "ml-platform.jobs.engineArgs" -}}
{{- $v := .values }}
{{- $args := list }}
{{- if and (eq $v.engine "duckdb") $v.duckdb.memoryLimit }}
{{- $args = list "--memory-limit" $v.duckdb.memoryLimit "--spill-dir" "/tmp/spill" }}
{{- else if and (eq $v.engine "spark") (not .operator) }}
{{- $args = list "--spark-master" (printf "local[%v]" $v.spark.localCores) }}
{{- end }}
{{- toYaml $args }}
{{- end }}

{{/*
The pod spec of a plain Job or a CronJob's Job running `python -m jobs <args>`: the jobs image, or
jobs-spark for engine spark; /tmp (DuckDB's spill dir, Spark's scratch) an emptyDir under the read-only
root. dict "root" . "component" "historical" "values" $v "args" $args "env" $env (YAML list items).
*/}}
{{- define "ml-platform.jobs.podSpec" -}}
{{- $root := .root }}
{{- $v := .values -}}
restartPolicy: Never
serviceAccountName: {{ include "ml-platform.jobs.serviceAccountName" . }}
automountServiceAccountToken: false
{{- include "common.imagePullSecrets" $root }}
securityContext:
  {{- include "common.podSecurityContext" $root | nindent 2 }}
containers:
  - name: {{ .component }}
    image: {{ include "common.image" (dict "root" $root "image" (eq $v.engine "spark" | ternary $v.spark.image $v.image)) | quote }}
    imagePullPolicy: {{ $root.Values.global.image.pullPolicy }}
    command: ["python", "-m", "jobs"]
    args:
      {{- toYaml .args | nindent 6 }}
    env:
      {{- .env | nindent 6 }}
    {{- include "common.s3.envFrom" $root | nindent 4 }}
    resources:
      {{- toYaml $v.resources | nindent 6 }}
    securityContext:
      {{- include "common.containerSecurityContext" $root | nindent 6 }}
    volumeMounts:
      - name: tmp
        mountPath: /tmp
volumes:
  - name: tmp
    emptyDir: {}
{{- end }}

{{/*
A SparkApplicationSpec running `python -m jobs <args>` through the Spark operator: mode cluster, the
jobs-spark image on the driver and the executors (the driver lists the Delta table's files, the
executors read them from S3 with pyarrow). The body of a SparkApplication's spec and of a
ScheduledSparkApplication's template. dict "root" . "component" "historical" "values" $v "args" $args "env" $env
*/}}
{{- define "ml-platform.spark.applicationSpec" -}}
{{- $root := .root }}
{{- $s := .values.spark }}
{{- $ctx := dict "root" $root "component" .component -}}
type: Python
pythonVersion: "3"
mode: cluster
image: {{ include "common.image" (dict "root" $root "image" $s.image) | quote }}
imagePullPolicy: {{ $root.Values.global.image.pullPolicy }}
# In the image (images/jobs-spark/jobs_main.py): runs `python -m jobs` with the arguments below; the
# image's entrypoint turns the operator's `driver` and `executor` arguments into spark-submit and the JVM.
mainApplicationFile: local:///opt/spark/jobs_main.py
arguments:
  {{- toYaml .args | nindent 2 }}
sparkVersion: {{ $s.sparkVersion | quote }}
restartPolicy:
  type: Never
# /tmp: the JVM's and pyspark's scratch under the read-only root (Spark's local dirs are the operator's own
# emptyDirs).
volumes:
  - name: tmp
    emptyDir: {}
driver:
  cores: {{ $s.driver.cores }}
  memory: {{ $s.driver.memory | quote }}
  # Creates and watches the executor pods (its Role: templates/spark-rbac.yaml); its annotations carry the
  # cloud identity for S3 (EKS: IRSA).
  serviceAccount: {{ include "ml-platform.spark.serviceAccountName" $root | quote }}
  {{- include "ml-platform.spark.podSettings" $ctx | nindent 2 }}
  env:
    {{- .env | nindent 4 }}
  {{- include "common.s3.envFrom" $root | nindent 2 }}
executor:
  instances: {{ $s.executor.instances }}
  cores: {{ $s.executor.cores }}
  memory: {{ $s.executor.memory | quote }}
  serviceAccount: {{ include "ml-platform.spark.serviceAccountName" $root | quote }}
  {{- include "ml-platform.spark.podSettings" $ctx | nindent 2 }}
  env:
    {{- .env | nindent 4 }}
  {{- include "common.s3.envFrom" $root | nindent 2 }}
{{- end }}

{{/*
What the driver's and the executors' pods share: labels, Pod Security "restricted" (the namespace's level:
the same contexts as every other pod of the platform), /tmp mounted. The operator applies the contexts and
volumes through its mutating webhook (kubeflow/spark-operator: webhook.enable=true).
dict "root" . "component" "historical"
*/}}
{{- define "ml-platform.spark.podSettings" -}}
labels:
  {{- include "common.labels" . | nindent 2 }}
podSecurityContext:
  {{- include "common.podSecurityContext" .root | nindent 2 }}
securityContext:
  {{- include "common.containerSecurityContext" .root | nindent 2 }}
  runAsNonRoot: true
volumeMounts:
  - name: tmp
    mountPath: /tmp
{{- end }}

{{/* The service account of the Spark operator's driver and executors */}}
{{- define "ml-platform.spark.serviceAccountName" -}}
{{- $sa := .Values.sparkOperator.serviceAccount -}}
{{- if $sa.create }}
{{- default (printf "%s-spark" (include "ml-platform.fullname" .) | trunc 63 | trimSuffix "-") $sa.name }}
{{- else }}
{{- default "default" $sa.name }}
{{- end }}
{{- end }}

{{/* Does a job of this render run through the Spark operator? ("true" or empty) */}}
{{- define "ml-platform.spark.operatorUsed" -}}
{{- $api := .Capabilities.APIVersions -}}
{{- $h := and .Values.historical.enabled (eq .Values.historical.engine "spark") ($api.Has "sparkoperator.k8s.io/v1beta2/SparkApplication") -}}
{{- $f := and .Values.featureJob.enabled (eq .Values.featureJob.engine "spark") ($api.Has "sparkoperator.k8s.io/v1beta2/ScheduledSparkApplication") -}}
{{- if or $h $f }}true{{ end }}
{{- end }}

{{/*
The service account of a job's pods (Job or CronJob; the Spark operator's driver has spark.serviceAccount):
its annotations carry the cloud identity for S3 (EKS: eks.amazonaws.com/role-arn, IRSA, whose webhook
mounts its own token, so the pod's automount stays off). dict "root" . "component" "historical" "values" $v
*/}}
{{- define "ml-platform.jobs.serviceAccountName" -}}
{{- $sa := .values.serviceAccount -}}
{{- if $sa.create }}
{{- default (printf "%s-%s" (include "ml-platform.fullname" .root) .component | trunc 63 | trimSuffix "-") $sa.name }}
{{- else }}
{{- default "default" $sa.name }}
{{- end }}
{{- end }}

{{/* The ServiceAccount of ml-platform.jobs.serviceAccountName, when it is created here; ends with "---". */}}
{{- define "ml-platform.jobs.serviceAccount" -}}
{{- if .values.serviceAccount.create }}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ include "ml-platform.jobs.serviceAccountName" . }}
  labels:
    {{- include "common.labels" (dict "root" .root "component" .component) | nindent 4 }}
  {{- with .values.serviceAccount.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
automountServiceAccountToken: false
---
{{- end }}
{{- end }}
