#!/bin/bash
# The image's entrypoint, behind tini (PID 1):
#   ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/mltrain-entrypoint"]
#
# Spark on Kubernetes starts its executor pods (and, in cluster mode, its driver pod) from this image
# (spark.kubernetes.container.image) with Spark's own container arguments, `executor` or `driver`,
# and their settings in SPARK_* env vars. Those two are dispatched exactly as Apache Spark's image
# entrypoint does for Spark 4 (apache/spark-docker 4.0.0/scala2.13-java17-ubuntu/entrypoint.sh).
# Every other command (`dagster api grpc ...`, `python -m mltrain_assets.workloads...`, torchrun) is
# exec'd unchanged, before any Spark setup: its arguments, environment and exit code are its own.
#
# Writes nothing (pods run with readOnlyRootFilesystem, HOME=/tmp). Where this differs from Spark's
# script, the command it runs does not:
#   - no second tini (Spark's `tini -s --`): tini is already PID 1, each command is exec'd under it;
#   - no gosu switch from root: the image runs as uid 10001 already;
#   - SPARK_JAVA_OPT_<n> are read in numeric order of <n> (Spark's `sort -t_ -k4 -n`), verbatim;
#   - SPARK_HOME falls back to pip pyspark's folder, JAVA_HOME to the java on PATH (the Dockerfile
#     sets both).
set -eo pipefail

case "$1" in
  driver | executor) ;;
  *)
    # Non-spark-on-k8s command provided, proceeding in pass-through mode.
    if [ "$#" -eq 0 ]; then
      echo "mltrain-entrypoint: no command given (the image's default is the code location's dagster api grpc)" >&2
      exit 64
    fi
    # The code location (`dagster api grpc` / `dagster code-server start`) writes the pool limits into
    # the instance first (`mltrain init --pools`, idempotent; instance/pools.py) when the deployment names
    # the instance's folder: on Kubernetes, where the chart's instance ConfigMap is mounted (Helm
    # values). Before any run can start, never from a run; a failure stops the code server, loudly.
    if [ -n "$MLTRAIN_INIT_POOLS_DAGSTER_HOME" ] && [ "$1" = dagster ] \
      && { [ "$2 $3" = "api grpc" ] || [ "$2 $3" = "code-server start" ]; }; then
      echo "mltrain-entrypoint: mltrain init --pools (instance at $MLTRAIN_INIT_POOLS_DAGSTER_HOME)" >&2
      DAGSTER_HOME="$MLTRAIN_INIT_POOLS_DAGSTER_HOME" mltrain init --pools >&2
    fi
    exec "$@"
    ;;
esac

if [ -z "$SPARK_HOME" ]; then
  SPARK_HOME="$(python -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')"
  export SPARK_HOME
fi

if [ -z "$JAVA_HOME" ]; then
  JAVA_HOME=$(java -XshowSettings:properties -version 2>&1 > /dev/null | grep 'java.home' | awk '{print $3}')
fi

SPARK_CLASSPATH="$SPARK_CLASSPATH:${SPARK_HOME}/jars/*"
SPARK_EXECUTOR_JAVA_OPTS=()
while IFS= read -r name; do
  if [ -n "$name" ]; then
    SPARK_EXECUTOR_JAVA_OPTS+=("${!name}")
  fi
done < <(printf '%s\n' "${!SPARK_JAVA_OPT_@}" | sort -t_ -k4 -n)

if [ -n "$SPARK_EXTRA_CLASSPATH" ]; then
  SPARK_CLASSPATH="$SPARK_CLASSPATH:$SPARK_EXTRA_CLASSPATH"
fi

if [ -n "${PYSPARK_PYTHON+x}" ]; then
  export PYSPARK_PYTHON
fi
if [ -n "${PYSPARK_DRIVER_PYTHON+x}" ]; then
  export PYSPARK_DRIVER_PYTHON
fi

# If HADOOP_HOME is set and SPARK_DIST_CLASSPATH is not, put Hadoop's jars on the executor's
# classpath; a SPARK_DIST_CLASSPATH set by Docker or Kubernetes is kept. (Our image sets neither:
# pyspark bundles the Hadoop client.)
if [ -n "${HADOOP_HOME}" ] && [ -z "${SPARK_DIST_CLASSPATH}" ]; then
  SPARK_DIST_CLASSPATH="$("$HADOOP_HOME/bin/hadoop" classpath)"
  export SPARK_DIST_CLASSPATH
fi

if [ -n "${HADOOP_CONF_DIR+x}" ]; then
  SPARK_CLASSPATH="$HADOOP_CONF_DIR:$SPARK_CLASSPATH"
fi

# Spark's executor pods set SPARK_CONF_DIR=/opt/spark/conf, where they mount the spark.properties
# ConfigMap.
if [ -n "${SPARK_CONF_DIR+x}" ]; then
  SPARK_CLASSPATH="$SPARK_CONF_DIR:$SPARK_CLASSPATH"
elif [ -n "${SPARK_HOME+x}" ]; then
  SPARK_CLASSPATH="$SPARK_HOME/conf:$SPARK_CLASSPATH"
fi

# SPARK-43540: add current working directory into executor classpath
SPARK_CLASSPATH="$SPARK_CLASSPATH:$PWD"

# No fake passwd entry (Spark's attempt_setup_fake_passwd_entry): uid 10001 is in /etc/passwd.
case "$1" in
  driver)
    shift 1
    exec "$SPARK_HOME/bin/spark-submit" \
      --conf "spark.driver.bindAddress=$SPARK_DRIVER_BIND_ADDRESS" \
      --conf "spark.executorEnv.SPARK_DRIVER_POD_IP=$SPARK_DRIVER_BIND_ADDRESS" \
      --deploy-mode client \
      "$@"
    ;;
  executor)
    shift 1
    exec "${JAVA_HOME}/bin/java" \
      "${SPARK_EXECUTOR_JAVA_OPTS[@]}" \
      -Xms"$SPARK_EXECUTOR_MEMORY" \
      -Xmx"$SPARK_EXECUTOR_MEMORY" \
      -cp "$SPARK_CLASSPATH:$SPARK_DIST_CLASSPATH" \
      org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend \
      --driver-url "$SPARK_DRIVER_URL" \
      --executor-id "$SPARK_EXECUTOR_ID" \
      --cores "$SPARK_EXECUTOR_CORES" \
      --app-id "$SPARK_APPLICATION_ID" \
      --hostname "$SPARK_EXECUTOR_POD_IP" \
      --resourceProfileId "$SPARK_RESOURCE_PROFILE_ID" \
      --podName "$SPARK_EXECUTOR_POD_NAME"
    ;;
esac
