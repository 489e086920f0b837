# syntax=docker/dockerfile:1
# The mltrain image: the code location (`dagster api grpc`, as the Helm chart runs it), the run pods
# the K8sRunLauncher starts, and every workload pod (`python -m mltrain_assets.workloads...`,
# torchrun workers, the Spark driver and its executors). One image, so the production path runs
# exactly what the tests ran: the same pins, the same code; without what only the tests need.
#
#   docker build -t registry.example.com/mltrain:0.1.0 --build-arg MLTRAIN_CODE_COMMIT=$(git rev-parse HEAD) .
#   docker push registry.example.com/mltrain:0.1.0
#   docker buildx imagetools inspect registry.example.com/mltrain:0.1.0   # -> the digest for helm-values/
#
# Built for linux/amd64 only: requirements.runtime.lock is resolved for x86_64 (torch's CUDA build).
# Not built on the development machines (no Docker engine there): mltrain_assets_tests/test_dockerfile.py
# checks what can be checked without one.

# Base: Debian 12 (bookworm), because it is the Debian with an OpenJDK 17 package (Spark 4 runs on
# Java 17; trixie ships only 21). Pinned to a full Python patch release. For a reproducible release
# build, pin the digest too (the official images are rebuilt under the same tag for Debian fixes):
#   docker buildx imagetools inspect python:3.11.14-slim-bookworm     # prints "Digest: sha256:..."
#   docker build --build-arg PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:<digest> ...
# and refresh it (same commands) when Debian or CPython publish security fixes.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
FROM ${PYTHON_IMAGE}

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    JAVA_HOME=/usr/lib/jvm/java-17-openjdk-amd64 \
    SPARK_HOME=/usr/local/lib/python3.11/site-packages/pyspark

# Java 17 for Spark; tini as PID 1 (forwards signals, reaps torchrun's and Spark's children); procps
# for Spark's launch scripts. (The man1 folder: the JRE's postinst expects it, slim images drop it.)
RUN mkdir -p /usr/share/man/man1 \
    && apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless procps tini \
    && rm -rf /var/lib/apt/lists/*

# Every Python distribution the project runs with, from the runtime lock, each checked against its
# pinned hashes; nothing else (no test tools: those are in requirements.lock, for `make install`).
# `make lock` regenerates both locks, the runtime one at the pins of the other; the test suite checks
# they agree and match what it ran with.
COPY requirements.runtime.lock /tmp/requirements.runtime.lock
RUN pip install --no-deps --require-hashes -r /tmp/requirements.runtime.lock && rm /tmp/requirements.runtime.lock

# S3A for Spark: hadoop-aws must be the version of the Hadoop client that pyspark bundles
# (pyspark/jars/hadoop-client-api-<version>.jar), with the AWS SDK v2 bundle and the analytics
# accelerator that hadoop-aws <version> was built against (its pom). Fetched here, at build time,
# into pyspark's own jars folder (on every driver's and executor's classpath), and verified:
# the SHA-1 pinned below must match both the downloaded file and the .sha1 Maven Central publishes,
# and the pyspark installed from the lock must bundle exactly HADOOP_VERSION. Nothing is fetched at
# run time (no Spark package resolution anywhere). To move versions: see README "Production".
ARG MAVEN_REPOSITORY=https://repo1.maven.org/maven2
ARG HADOOP_VERSION=3.5.0
ARG HADOOP_AWS_SHA1=9e594525d264c0db653c7f68da98b245f7d61ea5
ARG AWS_SDK_BUNDLE_VERSION=2.35.4
ARG AWS_SDK_BUNDLE_SHA1=7252265e3970b214708e68a8b74a8fa8c875af1e
ARG ANALYTICS_ACCELERATOR_VERSION=1.3.1
ARG ANALYTICS_ACCELERATOR_SHA1=6c9bd0f6c440c9a78e82d272f5f0252d942419f6
RUN python - <<'EOF'
import hashlib
import os
import pathlib
import urllib.request

import pyspark

env = os.environ
jars = pathlib.Path(pyspark.__file__).parent / "jars"
bundled = sorted(p.name for p in jars.glob("hadoop-client-api-*.jar"))
expected = f"hadoop-client-api-{env['HADOOP_VERSION']}.jar"
if bundled != [expected]:
    raise SystemExit(f"pyspark bundles {bundled}, the Dockerfile pins hadoop-aws {env['HADOOP_VERSION']}")

artifacts = [
    ("org/apache/hadoop", "hadoop-aws", env["HADOOP_VERSION"], env["HADOOP_AWS_SHA1"]),
    ("software/amazon/awssdk", "bundle", env["AWS_SDK_BUNDLE_VERSION"], env["AWS_SDK_BUNDLE_SHA1"]),
    (
        "software/amazon/s3/analyticsaccelerator",
        "analyticsaccelerator-s3",
        env["ANALYTICS_ACCELERATOR_VERSION"],
        env["ANALYTICS_ACCELERATOR_SHA1"],
    ),
]
for group, artifact, version, pinned in artifacts:
    name = f"{artifact}-{version}.jar"
    url = f"{env['MAVEN_REPOSITORY']}/{group}/{artifact}/{version}/{name}"
    with urllib.request.urlopen(f"{url}.sha1", timeout=60) as response:
        published = response.read().decode().split()[0].strip().lower()
    target = jars / name
    sha1, sha256 = hashlib.sha1(), hashlib.sha256()
    with urllib.request.urlopen(url, timeout=600) as response, target.open("wb") as out:
        while chunk := response.read(1 << 20):
            sha1.update(chunk)
            sha256.update(chunk)
            out.write(chunk)
    if not sha1.hexdigest() == published == pinned.lower():
        target.unlink()
        raise SystemExit(f"{name}: sha1 {sha1.hexdigest()}, Maven Central says {published}, pinned {pinned}")
    print(f"{name}: sha1 {pinned} verified; sha256 {sha256.hexdigest()}")
EOF

# The project itself, from the same source the tests ran, with the build backend from the lock.
COPY pyproject.toml README.md /tmp/src/
COPY mltrain_assets /tmp/src/mltrain_assets
RUN pip install --no-deps --no-build-isolation --no-index /tmp/src && rm -rf /tmp/src

# The entrypoint: Spark's `executor` and `driver` container arguments (the pods Spark on Kubernetes
# starts from this image), every other command passed through. Owned by root, not writable by the user.
COPY --chmod=0755 deploy/docker/entrypoint.sh /usr/local/bin/mltrain-entrypoint

# Non-root. HOME and every scratch path point into /tmp: in Kubernetes the root filesystem is
# read-only and /tmp is an emptyDir (helm-values/dagster.yaml).
RUN groupadd --system --gid 10001 mltrain \
    && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin mltrain
ARG MLTRAIN_CODE_COMMIT=unknown
# (DAGSTER_HOME comes from the chart, with its dagster.yaml; unset, mltrain uses $MLTRAIN_HOME/dagster.)
ENV HOME=/tmp \
    MLTRAIN_HOME=/tmp/mltrain \
    SPARK_LOCAL_DIRS=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    MLTRAIN_CODE_COMMIT=${MLTRAIN_CODE_COMMIT}
WORKDIR /app
USER 10001:10001

# tini (PID 1) keeps the command's signals and children in order; the entrypoint script execs the
# command under it: Spark's executor (`executor`: the JVM's KubernetesExecutorBackend) or cluster-mode
# driver (`driver`), or any other command unchanged. The default command is the code location as the
# chart runs it; workloads pass their own:
#   docker run IMAGE python -m mltrain_assets.pipelines.demand.workloads.train --params '{...}'
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/mltrain-entrypoint"]
CMD ["dagster", "api", "grpc", "--module-name", "mltrain_assets.definitions", "--host", "0.0.0.0", "--port", "3030"]
