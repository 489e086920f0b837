"""The Dockerfile and requirements.lock, checked without a Docker engine.

What can be established here: the image's pins agree with what the tests run on (the lock is the
installed environment; hadoop-aws is the Hadoop version the installed pyspark bundles, with the AWS
SDK that Hadoop version was built against), the jar download is verified the way it claims, the
base image is pinned and the user is not root, and nothing downloads at run time.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import io
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
LOCK = ROOT / "requirements.lock"

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
    (entrypoint,) = [rest for keyword, rest, _ in dockerfile if keyword == "ENTRYPOINT"]
    assert entrypoint == '["/usr/bin/tini", "--"]'  # any command works behind it: grpc or a workload
    (cmd,) = [rest for keyword, rest, _ in dockerfile if keyword == "CMD"]
    values = yaml.safe_load((ROOT / "helm-values" / "dagster.yaml").read_text())
    grpc_args = values["dagster-user-deployments"]["deployments"][0]["dagsterApiGrpcArgs"]
    assert cmd.startswith('["dagster", "api", "grpc"') and all(f'"{a}"' in cmd for a in grpc_args)


def _lock() -> dict[str, dict]:
    entries = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", LOCK.read_text()):
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


def test_image_installs_exactly_the_lock(dockerfile):
    runs = [rest for keyword, rest, _ in dockerfile if keyword == "RUN"]
    assert any("pip install --no-deps --require-hashes -r /tmp/requirements.lock" in r for r in runs)
    project = [r for r in runs if "/tmp/src" in r and "pip install" in r]
    assert project and all("--no-deps" in r and "--no-index" in r for r in project)
    copies = [rest for keyword, rest, _ in dockerfile if keyword == "COPY"]
    assert "requirements.lock /tmp/requirements.lock" in copies


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
