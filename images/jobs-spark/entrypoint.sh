#!/bin/sh
# ENTRYPOINT of the jobs-spark image. The Spark operator starts its driver and executor pods with the
# arguments Apache Spark's own images take (their kubernetes/dockerfiles/spark/entrypoint.sh): `driver
# <spark-submit arguments>` and `executor` (its settings in SPARK_EXECUTOR_* variables). This does what that
# entrypoint does, for pip's pyspark, whose SPARK_HOME is the package directory (bin/spark-submit and jars/,
# spark-kubernetes included). Anything else runs as given: the chart's plain Jobs set their command
# (python -m jobs ...), which replaces this entrypoint anyway.
set -eu
if [ -z "${SPARK_HOME:-}" ]; then
  SPARK_HOME="$(python -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')"
  export SPARK_HOME
fi
case "${1:-}" in
  driver)
    shift
    exec "$SPARK_HOME/bin/spark-submit" \
      --conf "spark.driver.bindAddress=${SPARK_DRIVER_BIND_ADDRESS}" \
      --conf "spark.executorEnv.SPARK_DRIVER_POD_IP=${SPARK_DRIVER_BIND_ADDRESS}" \
      --deploy-mode client "$@"
    ;;
  executor)
    shift
    # SPARK_EXECUTOR_JAVA_OPTS is a list of options: split on purpose.
    # shellcheck disable=SC2086
    exec java ${SPARK_EXECUTOR_JAVA_OPTS:-} -Xms"${SPARK_EXECUTOR_MEMORY}" -Xmx"${SPARK_EXECUTOR_MEMORY}" \
      -cp "${SPARK_CLASSPATH:+${SPARK_CLASSPATH}:}${SPARK_HOME}/jars/*" \
      org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend \
      --driver-url "${SPARK_DRIVER_URL}" --executor-id "${SPARK_EXECUTOR_ID}" \
      --cores "${SPARK_EXECUTOR_CORES}" --app-id "${SPARK_APPLICATION_ID}" \
      --hostname "${SPARK_EXECUTOR_POD_IP}" --resourceProfileId "${SPARK_RESOURCE_PROFILE_ID:-0}" \
      --podName "${SPARK_EXECUTOR_POD_NAME}"
    ;;
  *)
    exec "$@"
    ;;
esac
