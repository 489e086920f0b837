"""The Dockerfile, its entrypoint and the two locks, checked without a Docker engine.

What can be established here: the image's pins agree with what the tests run on (requirements.lock
is the installed environment; requirements.runtime.lock, what the image installs, is its runtime part
at the same pins, without the test tools; hadoop-aws is the Hadoop version the installed pyspark
bundles, with the AWS SDK that Hadoop version was built against), the jar download is verified the
way it claims, the base image is pinned and the user is not root, nothing downloads at run time, and
the entrypoint starts what Spark on Kubernetes asks of the image (its executor, run here on this
machine's Java against the installed pyspark) and passes every other command through.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tomllib
import types
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
LOCK = ROOT / "requirements.lock"  # everything, dev extra included: `make install`
RUNTIME_LOCK = ROOT / "requirements.runtime.lock"  # what the image installs
ENTRYPOINT_SCRIPT = ROOT / "deploy" / "docker" / "entrypoint.sh"
IMAGE_ENTRYPOINT = "/usr/local/bin/mltrain-entrypoint"
EXECUTOR_BACKEND = "org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend"
# The test tools of the dev extra, and what only they bring (pluggy, iniconfig: pytest's).
TEST_TOOLS = {"pytest", "pytest-timeout", "pytest-xdist", "moto", "playwright", "ruff", "pluggy", "iniconfig"}

# What hadoop-aws X.Y.Z was built against: `aws-java-sdk-v2.version` in hadoop-project-X.Y.Z.pom, and
# hadoop-aws-X.Y.Z.pom's analyticsaccelerator-s3 dependency (compile scope since 3.4.2, HADOOP-19348).
#   3.4.1: bundle 2.24.6  (HADOOP-19082, apache/hadoop#6568)
#   3.4.2: bundle 2.29.52 (HADOOP-19485, apache/hadoop#7573)
#   3.5.0: bundle 2.35.4  (HADOOP-19654, apache/hadoop#7882; SPARK-54642: "to be ready for Apache
#          Hadoop 3.4.3 and 3.5.0"), analyticsaccelerator-s3 1.3.1
# Add the next pair from those two poms when pyspark moves to a new Hadoop.
HADOOP_AWS_SDK_BUNDLE = {"3.4.1": "2.24.6", "3.4.2": "2.29.52", "3.5.0": "2.35.4"}
HADOOP_ANALYTICS_ACCELERATOR = {"3.5.0": "1.3.1"}


def instructions(text: str) -> list[tuple[str, str, str | None]]:
    """(INSTRUCTION, arguments, heredoc body) per instruction; continuations joined."""
    lines = text.splitlines()
    found, i = [], 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        while line.rstrip().endswith("\\"):
            line = line.rstrip()[:-1] + " " + lines[i].strip()
            i += 1
        keyword, _, rest = line.strip().partition(" ")
        body = None
        heredoc = re.search(r"<<-?['\"]?(\w+)['\"]?", rest)
        if heredoc:
            start = i
            while lines[i].strip() != heredoc.group(1):
                i += 1
            body = "\n".join(lines[start:i])
            i += 1
        found.append((keyword.upper(), rest.strip(), body))
    return found


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str, str | None]]:
    return instructions(DOCKERFILE.read_text())


def build_args(parsed) -> dict[str, str]:
    args = {}
    for keyword, rest, _ in parsed:
        if keyword == "ARG" and "=" in rest:
            name, value = rest.split("=", 1)
            args[name] = value
    return args


def bundled_hadoop_version() -> str:
    jars = Path(importlib.util.find_spec("pyspark").origin).parent / "jars"
    versions = {
        re.fullmatch(r"hadoop-client-(?:api|runtime)-(.+)\.jar", p.name)[1] for p in jars.glob("hadoop-client-*.jar")
    }
    assert len(versions) == 1, f"pyspark bundles several Hadoop clients: {versions}"
    return versions.pop()


def test_base_image_is_pinned(dockerfile):
    args = build_args(dockerfile)
    (base,) = [rest for keyword, rest, _ in dockerfile if keyword == "FROM"]
    image = re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], base)
    name, _, digest = image.partition("@")
    match = re.fullmatch(r"python:(\d+)\.(\d+)\.(\d+)-slim-bookworm", name)
    assert match, f"base image {image!r} is not a full python patch release on slim-bookworm"
    assert digest == "" or re.fullmatch(r"sha256:[0-9a-f]{64}", digest), image
    assert (int(match[1]), int(match[2])) == sys.version_info[:2], "the image runs another Python than the tests"


def test_hadoop_aws_is_the_hadoop_that_pyspark_bundles(dockerfile):
    assert build_args(dockerfile)["HADOOP_VERSION"] == bundled_hadoop_version()


def test_aws_sdk_bundle_is_the_one_that_hadoop_was_built_against(dockerfile):
    args = build_args(dockerfile)
    hadoop = args["HADOOP_VERSION"]
    assert hadoop in HADOOP_AWS_SDK_BUNDLE, f"hadoop-aws {hadoop}: look up its AWS SDK in hadoop-project-{hadoop}.pom"
    assert args["AWS_SDK_BUNDLE_VERSION"] == HADOOP_AWS_SDK_BUNDLE[hadoop]
    assert args["ANALYTICS_ACCELERATOR_VERSION"] == HADOOP_ANALYTICS_ACCELERATOR[hadoop]
    for name in ("HADOOP_AWS_SHA1", "AWS_SDK_BUNDLE_SHA1", "ANALYTICS_ACCELERATOR_SHA1"):
        assert re.fullmatch(r"[0-9a-f]{40}", args[name]), f"{name} is not a pinned SHA-1"


def _jar_script(dockerfile) -> str:
    (script,) = [body for keyword, rest, body in dockerfile if keyword == "RUN" and body and "hadoop-aws" in body]
    return script


def _run_jar_script(dockerfile, tmp_path, monkeypatch, *, bundled: str, corrupt: str | None = None) -> Path:
    """Run the image's jar step against a stand-in Maven repository and pyspark install."""
    args = build_args(dockerfile)
    jars = tmp_path / "pyspark" / "jars"
    jars.mkdir(parents=True)
    (jars / f"hadoop-client-api-{bundled}.jar").write_bytes(b"")
    monkeypatch.setitem(
        sys.modules, "pyspark", types.SimpleNamespace(__file__=str(tmp_path / "pyspark" / "__init__.py"))
    )
    served, pins = {}, {}
    for pin, group, artifact, version in (
        ("HADOOP_AWS_SHA1", "org/apache/hadoop", "hadoop-aws", args["HADOOP_VERSION"]),
        ("AWS_SDK_BUNDLE_SHA1", "software/amazon/awssdk", "bundle", args["AWS_SDK_BUNDLE_VERSION"]),
        (
            "ANALYTICS_ACCELERATOR_SHA1",
            "software/amazon/s3/analyticsaccelerator",
            "analyticsaccelerator-s3",
            args["ANALYTICS_ACCELERATOR_VERSION"],
        ),
    ):
        url = f"{args['MAVEN_REPOSITORY']}/{group}/{artifact}/{version}/{artifact}-{version}.jar"
        content = f"{artifact} {version}".encode()
        served[url] = b"tampered" if artifact == corrupt else content
        served[f"{url}.sha1"] = f"{hashlib.sha1(content).hexdigest()}  {artifact}-{version}.jar\n".encode()
        pins[pin] = hashlib.sha1(content).hexdigest()
    monkeypatch.setattr("urllib.request.urlopen", lambda url, timeout=None: io.BytesIO(served[url]))
    for name, value in {**args, **pins}.items():
        monkeypatch.setenv(name, value)
    exec(compile(_jar_script(dockerfile), "Dockerfile:jars", "exec"), {"__name__": "__main__"})
    return jars


def test_jar_step_installs_verified_jars_into_pyspark(dockerfile, tmp_path, monkeypatch, capsys):
    args = build_args(dockerfile)
    jars = _run_jar_script(dockerfile, tmp_path, monkeypatch, bundled=args["HADOOP_VERSION"])
    assert (jars / f"hadoop-aws-{args['HADOOP_VERSION']}.jar").exists()
    assert (jars / f"bundle-{args['AWS_SDK_BUNDLE_VERSION']}.jar").exists()
    assert "verified" in capsys.readouterr().out


def test_jar_step_refuses_a_jar_whose_checksum_differs(dockerfile, tmp_path, monkeypatch):
    args = build_args(dockerfile)
    with pytest.raises(SystemExit, match=r"bundle-.*sha1"):
        _run_jar_script(dockerfile, tmp_path, monkeypatch, bundled=args["HADOOP_VERSION"], corrupt="bundle")
    assert not (tmp_path / "pyspark" / "jars" / f"bundle-{args['AWS_SDK_BUNDLE_VERSION']}.jar").exists()


def test_jar_step_refuses_a_pyspark_with_another_hadoop(dockerfile, tmp_path, monkeypatch):
    with pytest.raises(SystemExit, match="pyspark bundles"):
        _run_jar_script(dockerfile, tmp_path, monkeypatch, bundled="9.9.9")


def test_runs_as_a_non_root_user(dockerfile):
    users = [rest for keyword, rest, _ in dockerfile if keyword == "USER"]
    assert users, "no USER: the image would run as root"
    uid = users[-1].split(":")[0]
    assert uid not in ("0", "root") and uid == "10001", users[-1]
    assert any("useradd" in rest and "--uid 10001" in rest for keyword, rest, _ in dockerfile if keyword == "RUN")


def test_workdir_environment_and_entrypoint(dockerfile):
    keywords = [keyword for keyword, _, _ in dockerfile]
    assert "WORKDIR" in keywords
    env = " ".join(rest for keyword, rest, _ in dockerfile if keyword == "ENV")
    assert "PYTHONUNBUFFERED=1" in env and "MLTRAIN_HOME=/tmp/" in env
    # Spark's executor and driver run from pip pyspark's folder, with the Java the image installs.
    (base,) = [rest for keyword, rest, _ in dockerfile if keyword == "FROM"]
    python = re.fullmatch(r"python:(\d+\.\d+)\.\d+-slim-bookworm", build_args(dockerfile)["PYTHON_IMAGE"].split("@")[0])
    assert base == "${PYTHON_IMAGE}" and python
    assert f"SPARK_HOME=/usr/local/lib/python{python[1]}/site-packages/pyspark" in env.split()
    assert "JAVA_HOME=/usr/lib/jvm/java-17-openjdk-amd64" in env.split()
    (cmd,) = [rest for keyword, rest, _ in dockerfile if keyword == "CMD"]
    values = yaml.safe_load((ROOT / "helm-values" / "dagster.yaml").read_text())
    grpc_args = values["dagster-user-deployments"]["deployments"][0]["dagsterApiGrpcArgs"]
    assert cmd.startswith('["dagster", "api", "grpc"') and all(f'"{a}"' in cmd for a in grpc_args)


def test_entrypoint_is_tini_then_the_script(dockerfile):
    """tini stays PID 1; the script (root's, not writable by the user) dispatches the command."""
    (entrypoint,) = [rest for keyword, rest, _ in dockerfile if keyword == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["/usr/bin/tini", "--", IMAGE_ENTRYPOINT]
    copies = [(i, rest) for i, (keyword, rest, _) in enumerate(dockerfile) if keyword == "COPY"]
    (copy,) = [(i, rest) for i, rest in copies if rest.split()[-1] == IMAGE_ENTRYPOINT]
    flags = [word for word in copy[1].split() if word.startswith("--")]
    assert copy[1].split()[-2] == str(ENTRYPOINT_SCRIPT.relative_to(ROOT)) and flags == ["--chmod=0755"]
    (user,) = [i for i, (keyword, _, _) in enumerate(dockerfile) if keyword == "USER"]
    assert copy[0] < user, "copied as root (owned by root), before USER"
    lines = ENTRYPOINT_SCRIPT.read_text().splitlines()
    assert lines[0] == "#!/bin/bash" and "set -eo pipefail" in lines


def _dockerignore_includes(path: str) -> bool:
    """Whether `path` is in the build context: .dockerignore's patterns in order, the last one that
    matches the path or one of its parent folders decides (Docker's rules, `*` within one folder)."""
    included = True
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        wildcards = {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}
        regex = "".join(wildcards.get(part, re.escape(part)) for part in re.split(r"(\*\*/|\*\*|\*|\?)", pattern))
        parts = path.split("/")
        if any(re.fullmatch(regex, "/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            included = negated
    return included


def test_build_context_holds_what_the_dockerfile_copies_and_not_the_dev_lock(dockerfile):
    sources = [
        source
        for keyword, rest, _ in dockerfile
        if keyword == "COPY"
        for source in [w for w in rest.split() if not w.startswith("--")][:-1]
    ]
    assert "requirements.runtime.lock" in sources and "deploy/docker/entrypoint.sh" in sources
    for source in sources:
        assert (ROOT / source).exists(), source
        assert _dockerignore_includes(source), f"{source} is excluded from the build context by .dockerignore"
    assert _dockerignore_includes("mltrain_assets/definitions.py")
    assert not _dockerignore_includes("mltrain_assets/__pycache__/definitions.cpython-311.pyc")
    assert not _dockerignore_includes("requirements.lock"), "the image does not install the dev lock"
    assert not _dockerignore_includes("deploy/k8s") and not _dockerignore_includes(".venv/bin/python")


def _lock(path: Path = LOCK) -> dict[str, dict]:
    entries = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", path.read_text()):
        match = re.match(r"([A-Za-z0-9_.\-]+)==([^\s;\\]+)", block)
        if not match:
            continue
        via = re.findall(r"#\s+(?:via\s+)?([A-Za-z0-9_.\-]+)\s*$", block, flags=re.MULTILINE)
        entries[canonicalize_name(match[1])] = {
            "version": match[2],
            "hashes": re.findall(r"--hash=sha256:[0-9a-f]{64}", block),
            "via": {canonicalize_name(v) for v in via if v != "via"},
        }
    return entries


def _installed() -> dict[str, str]:
    return {canonicalize_name(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()}


def _required_closure(root: str, extras: set[str]) -> set[str]:
    """The distributions `root[extras]` needs here, transitively (markers evaluated for this machine)."""
    seen, todo = set(), [(canonicalize_name(root), frozenset(extras))]
    while todo:
        name, wanted = todo.pop()
        if (name, wanted) in seen:
            continue
        seen.add((name, wanted))
        for line in importlib.metadata.requires(name) or []:
            requirement = Requirement(line)
            if requirement.marker and not any(
                requirement.marker.evaluate({"extra": extra}) for extra in (wanted or {""})
            ):
                continue
            todo.append((canonicalize_name(requirement.name), frozenset(requirement.extras)))
    return {name for name, _ in seen} - {canonicalize_name(root)}


def test_lock_is_what_is_installed():
    lock, installed = _lock(), _installed()
    assert len(lock) > 100 and all(entry["hashes"] for entry in lock.values()), "every pin carries its hashes"
    # Everything the project and its dev extra need here is locked, at the version the tests run on.
    for name in sorted(_required_closure("mltrain_assets", {"dev"})):
        assert name in lock, f"{name} is installed and required but not in requirements.lock (make lock)"
        assert Version(lock[name]["version"]) == Version(Version(installed[name]).public), (
            f"{name}: lock {lock[name]['version']}, installed {installed[name]} (make lock, or reinstall from it)"
        )
    # Every other locked distribution installed here matches too.
    for name, entry in lock.items():
        if name in installed:
            assert Version(entry["version"]) == Version(Version(installed[name]).public), name
    # What is locked and not installed is only torch's CUDA runtime: the image's torch is PyPI's CUDA
    # build, the one here is the CPU build of the same release, which needs none of it.
    cuda = {"torch"}
    changed = True
    while changed:
        new = {name for name, entry in lock.items() if name not in installed and entry["via"] and entry["via"] <= cuda}
        changed = not new <= cuda
        cuda |= new
    assert set(lock) - set(installed) <= cuda, sorted(set(lock) - set(installed) - cuda)


def test_image_installs_exactly_the_runtime_lock(dockerfile):
    runs = [rest for keyword, rest, _ in dockerfile if keyword == "RUN"]
    assert any("pip install --no-deps --require-hashes -r /tmp/requirements.runtime.lock" in r for r in runs)
    project = [r for r in runs if "/tmp/src" in r and "pip install" in r]
    assert project and all("--no-deps" in r and "--no-index" in r for r in project)
    copies = [rest for keyword, rest, _ in dockerfile if keyword == "COPY"]
    assert "requirements.runtime.lock /tmp/requirements.runtime.lock" in copies
    # The dev lock (test tools included) is not what the image installs.
    assert not [r for r in runs + copies if "requirements.lock" in r]
    installs = [r for r in runs if "pip install" in r]
    assert len(installs) == 2, installs  # the lock, then the project: nothing else is installed


def _runtime_closure(dev_lock: dict[str, dict]) -> set[str]:
    """What the project's runtime dependencies and its build backend need, on the image's platform,
    read from the dev lock's `via` annotations: a distribution is needed when one that needs it is."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    requirements = pyproject["project"]["dependencies"] + pyproject["build-system"]["requires"]
    needed = {canonicalize_name(Requirement(r).name) for r in requirements}
    changed = True
    while changed:
        new = {name for name, entry in dev_lock.items() if entry["via"] & needed} - needed
        needed |= new
        changed = bool(new)
    return needed


def test_runtime_lock_has_no_test_tools():
    runtime, dev = _lock(RUNTIME_LOCK), _lock()
    assert not TEST_TOOLS & set(runtime), sorted(TEST_TOOLS & set(runtime))
    # pluggy and iniconfig come only from pytest; jsonschema is in the dev extra and also a runtime
    # need (kubernetes-validate: `mltrain manifests` validates what it prints), so it stays.
    assert dev["pluggy"]["via"] == {"pytest"} and dev["iniconfig"]["via"] == {"pytest"}
    assert "kubernetes-validate" in dev["jsonschema"]["via"] and "jsonschema" in runtime
    assert {"setuptools", "wheel"} <= set(runtime), "the build backend the image installs the project with"


def test_runtime_lock_is_the_dev_locks_runtime_part():
    """Same pins and hashes as requirements.lock, exactly the runtime dependencies' closure (make lock)."""
    runtime, dev = _lock(RUNTIME_LOCK), _lock()
    assert len(runtime) > 100 and all(entry["hashes"] for entry in runtime.values()), "every pin carries its hashes"
    for name, entry in runtime.items():
        assert name in dev, f"{name} is in requirements.runtime.lock but not in requirements.lock (make lock)"
        assert entry["version"] == dev[name]["version"], (
            f"{name}: runtime {entry['version']}, dev {dev[name]['version']}"
        )
        assert set(entry["hashes"]) == set(dev[name]["hashes"]), f"{name}: hashes differ between the locks"
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for requirement in map(Requirement, pyproject["project"]["dependencies"]):
        name = canonicalize_name(requirement.name)
        assert name in runtime and requirement.specifier.contains(runtime[name]["version"]), requirement
    closure = _runtime_closure(dev)
    assert set(runtime) == closure, {"extra": sorted(set(runtime) - closure), "missing": sorted(closure - set(runtime))}
    # Every requirement line is `name==version \` followed by its hashes: nothing installs unverified.
    lines = [
        line for line in RUNTIME_LOCK.read_text().splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]
    assert all(re.fullmatch(r"[A-Za-z0-9_.\-]+==\S+ \\|    --hash=sha256:[0-9a-f]{64}( \\)?", line) for line in lines)


RUNTIME_DOWNLOADS = re.compile(r"spark\.jars\.packages|spark\.jars\.repositories|spark\.jars\.ivy|--packages\b")


def test_nothing_downloads_jars_at_run_time():
    """No Spark session or submit anywhere in the project's code and configuration resolves
    packages from a repository: the jars are in the image."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    code = [
        ROOT / f
        for f in files
        if not f.startswith("mltrain_assets_tests/")
        and (
            f.endswith((".py", ".yaml", ".yml", ".toml", ".json", ".sh", ".cfg", ".ini"))
            or Path(f).name in ("Makefile", "Dockerfile")
        )
        and (ROOT / f).is_file()
    ]
    assert any(p.name == "compute.py" for p in code) and any(p.name == "Dockerfile" for p in code)
    offenders = [str(p.relative_to(ROOT)) for p in code if RUNTIME_DOWNLOADS.search(p.read_text(errors="ignore"))]
    assert not offenders, f"run-time package resolution in: {offenders}"


# The entrypoint, run here with bash as the image runs it. The environment is what Spark's
# BasicExecutorFeatureStep gives an executor container (KubernetesExecutorBuilder's first step; its
# LocalDirsFeatureStep adds SPARK_LOCAL_DIRS), the container args Spark's `executor`.
PYSPARK_HOME = Path(importlib.util.find_spec("pyspark").origin).parent
JAVA = shutil.which("java")
BASH = shutil.which("bash") or "/bin/bash"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _executor_env(tmp_path: Path, *, spark_home: Path, java_home: Path, driver_port: int) -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "SPARK_HOME": str(spark_home),
        "JAVA_HOME": str(java_home),
        "SPARK_USER": "mltrain",
        "SPARK_DRIVER_URL": f"spark://CoarseGrainedScheduler@127.0.0.1:{driver_port}",
        "SPARK_EXECUTOR_CORES": "1",
        "SPARK_EXECUTOR_MEMORY": "512m",
        "SPARK_APPLICATION_ID": "spark-5f3c9b2a41d84e0c9a7e6b1d2c3f4a5b",
        "SPARK_CONF_DIR": "/opt/spark/conf",
        "SPARK_EXECUTOR_ID": "1",
        "SPARK_RESOURCE_PROFILE_ID": "0",
        # spark.executor.extraJavaOptions first, then Spark's executor startup confs (ports, rpc, auth).
        "SPARK_JAVA_OPT_0": "-XX:+PrintCommandLineFlags",
        "SPARK_JAVA_OPT_1": f"-Dspark.driver.port={driver_port}",
        "SPARK_JAVA_OPT_2": "-Dspark.driver.blockManager.port=7079",
        "SPARK_EXECUTOR_POD_IP": "127.0.0.1",
        "SPARK_EXECUTOR_POD_NAME": "city-demand-features-1a2b3c-exec-1",
        "SPARK_LOCAL_DIRS": str(tmp_path),
    }


def _entrypoint(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(
        [BASH, str(ENTRYPOINT_SCRIPT), *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def java_home() -> Path:
    if JAVA is None:
        pytest.skip("no java on PATH: the executor branch starts a JVM")
    return Path(os.path.realpath(JAVA)).parents[1]


def test_executor_starts_kubernetes_executor_backend(tmp_path, java_home):
    """`executor` runs Spark's executor main class on pyspark's jars, with the heap, java options and
    arguments from Spark's env vars: it starts and fails fetching its properties from the driver URL
    it was given (nothing listens there)."""
    assert list((PYSPARK_HOME / "jars").glob("spark-kubernetes_*.jar")), "pyspark without its Kubernetes jar"
    port = _free_port()
    env = _executor_env(tmp_path, spark_home=PYSPARK_HOME, java_home=java_home, driver_port=port)
    result = _entrypoint(["executor"], env, tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    # SPARK_JAVA_OPT_0 reached the JVM, and -Xms/-Xmx came from SPARK_EXECUTOR_MEMORY (512m).
    assert "-XX:InitialHeapSize=536870912" in output and "-XX:MaxHeapSize=536870912" in output, output
    assert "INFO KubernetesExecutorBackend: Started daemon with process name:" in output, output
    # Its arguments parsed, it asked the driver at --driver-url for the app's properties.
    assert f"java.io.IOException: Failed to connect to /127.0.0.1:{port}" in output, output
    assert f"at {EXECUTOR_BACKEND}$.run(KubernetesExecutorBackend.scala" in output, output
    assert "RpcEnv.setupEndpointRefByURI" in output, output


def test_executor_with_a_missing_setting_fails_in_the_backends_argument_parsing(tmp_path, java_home):
    """Spark's own script quotes every argument: a missing SPARK_EXECUTOR_CORES arrives as
    `--cores ""`, which the executor's argument parsing refuses. (A missing SPARK_EXECUTOR_ID arrives
    as an empty id, which Spark accepts, as it does from its own image.)"""
    env = _executor_env(tmp_path, spark_home=PYSPARK_HOME, java_home=java_home, driver_port=_free_port())
    del env["SPARK_EXECUTOR_CORES"]
    result = _entrypoint(["executor"], env, tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert 'java.lang.NumberFormatException: For input string: ""' in output, output
    assert f"at {EXECUTOR_BACKEND}$.parseArguments(KubernetesExecutorBackend.scala" in output, output


def _recorder(path: Path) -> Path:
    """An executable that prints its arguments as a JSON list (stands in for java or spark-submit)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!{sys.executable}\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    path.chmod(0o755)
    return path


def test_executor_command_line_is_sparks(tmp_path):
    """The exact command line, without a JVM: Spark's, java options in numeric order, verbatim."""
    java_home, spark_home, cwd = tmp_path / "jdk", tmp_path / "pyspark", tmp_path / "work"
    _recorder(java_home / "bin" / "java")
    cwd.mkdir()
    env = _executor_env(tmp_path, spark_home=spark_home, java_home=java_home, driver_port=7078)
    opts = [f"-Dmltrain.opt{i}=value {i}" for i in range(12)]  # 12: _10 and _11 sort after _9
    env = {k: v for k, v in env.items() if not k.startswith("SPARK_JAVA_OPT_")}
    env.update({f"SPARK_JAVA_OPT_{i}": opt for i, opt in enumerate(opts)})
    result = _entrypoint(["executor", "ignored"], env, cwd)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [
        *opts,
        "-Xms512m",
        "-Xmx512m",
        "-cp",
        f"/opt/spark/conf::{spark_home}/jars/*:{cwd}:",
        EXECUTOR_BACKEND,
        *("--driver-url", "spark://CoarseGrainedScheduler@127.0.0.1:7078"),
        *("--executor-id", "1"),
        *("--cores", "1"),
        *("--app-id", "spark-5f3c9b2a41d84e0c9a7e6b1d2c3f4a5b"),
        *("--hostname", "127.0.0.1"),
        *("--resourceProfileId", "0"),
        *("--podName", "city-demand-features-1a2b3c-exec-1"),
    ]


def test_driver_command_line_is_sparks(tmp_path):
    """Cluster mode's driver pod: `driver` + spark-submit's arguments, run in client mode in the pod."""
    spark_home = tmp_path / "pyspark"
    _recorder(spark_home / "bin" / "spark-submit")
    args = ["--properties-file", "/opt/spark/conf/spark.properties", "--class", "org.apache.spark.deploy.PythonRunner"]
    args += ["local:///app/job.py", "--day", "2026-01-01"]
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "SPARK_HOME": str(spark_home)}
    env |= {"JAVA_HOME": str(tmp_path / "jdk"), "SPARK_DRIVER_BIND_ADDRESS": "10.1.2.3"}
    result = _entrypoint(["driver", *args], env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [
        *("--conf", "spark.driver.bindAddress=10.1.2.3"),
        *("--conf", "spark.executorEnv.SPARK_DRIVER_POD_IP=10.1.2.3"),
        *("--deploy-mode", "client"),
        *args,
    ]


def test_other_commands_pass_through_unchanged(tmp_path):
    """The code location and the workloads: exec'd (the same process, so tini's child), arguments
    verbatim, exit code kept, and no Spark setup first (no SPARK_HOME, JAVA_HOME or python on PATH)."""
    empty = tmp_path / "empty"
    empty.mkdir()
    code = "import os, sys; print(os.getpid(), repr(sys.argv[1:])); sys.exit(7)"
    process = subprocess.Popen(
        [BASH, str(ENTRYPOINT_SCRIPT), sys.executable, "-c", code, "a b", "", "executor"],
        env={"PATH": str(empty), "HOME": str(tmp_path)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 7, stderr
    assert stdout == f"{process.pid} {['a b', '', 'executor']!r}\n" and stderr == ""

    result = _entrypoint(["echo", "ok"], {"PATH": os.environ["PATH"]}, tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (0, "ok\n", "")
    result = _entrypoint([], {"PATH": os.environ["PATH"]}, tmp_path)
    assert result.returncode == 64 and "no command" in result.stderr


def test_entrypoint_writes_nothing():
    """readOnlyRootFilesystem: no redirection into a file (Spark's /tmp/java_opts.txt, /etc/passwd)."""
    code = [
        line.split(" #")[0] for line in ENTRYPOINT_SCRIPT.read_text().splitlines() if not line.lstrip().startswith("#")
    ]
    redirects = re.findall(r"(?<![<0-9&])>>?\s*(\S+)", "\n".join(code))
    assert set(redirects) <= {"/dev/null", "&2"}, redirects
    assert not re.search(r"(?<![\w-])(mktemp|tee|touch|mkdir|cp|mv|ln|sed -i)\b", "\n".join(code))


def test_the_code_location_writes_the_pool_limits_before_it_serves(tmp_path):
    """Helm: the code server starts with `mltrain init --pools` against the chart's instance (mounted at
    MLTRAIN_INIT_POOLS_DAGSTER_HOME), then execs the server; a failed init keeps the server from starting."""
    from dagster import DagsterInstance

    instance_home = tmp_path / "instance"
    instance_home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", instance_home / "dagster.yaml")
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "dagster").write_text('#!/bin/sh\necho "server: $*"\n')
    (fake / "dagster").chmod(0o755)
    env = {
        "PATH": f"{fake}:{Path(sys.executable).parent}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "MLTRAIN_HOME": str(tmp_path / "home"),
        "MLTRAIN_INIT_POOLS_DAGSTER_HOME": str(instance_home),
    }
    result = _entrypoint(["dagster", "api", "grpc", "-p", "3030"], env, tmp_path, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.endswith("server: api grpc -p 3030\n")
    assert "pool registry: 1 slot(s) from MLTRAIN_POOL_LIMITS (set)" in result.stderr
    with DagsterInstance.from_config(str(instance_home)) as instance:
        limits = {p.name: (p.limit, p.from_default) for p in instance.event_log_storage.get_pool_limits()}
    assert limits == {"registry": (1, False), "spark": (2, True), "training": (2, True)}

    refused = _entrypoint(
        ["dagster", "api", "grpc"], {**env, "MLTRAIN_POOL_LIMITS": '{"registry": "one"}'}, tmp_path, timeout=180
    )
    assert refused.returncode != 0 and "server:" not in refused.stdout
    assert "mltrain init: " in refused.stderr and "Traceback" not in refused.stderr
    assert """MLTRAIN_POOL_LIMITS='{"registry": "one"}': expected a JSON object of pool: slots""" in refused.stderr
