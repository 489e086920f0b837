"""The Pod Security table against Kubernetes' own pod-security-admission fixtures for v1.30 (psa_fixtures/,
vendored from kubernetes/kubernetes): every "fail" pod is refused for the control the fixture exercises, and
every "pass" pod is admitted, at the fixture's level (baseline, or restricted which includes baseline).

The project's extra rule (read-only root filesystem) is not part of the standard, so it is left out here."""

from pathlib import Path

import pytest
import yaml

from mltrain_assets.resources.pod_security import violations

FIXTURES = Path(__file__).parent / "psa_fixtures"
VERSION = "v1.30"
LEVELS = {"baseline": ("baseline",), "restricted": ("baseline", "restricted")}
# Upstream's count per folder: a missing or emptied folder fails instead of parametrizing nothing.
COUNTS = {("baseline", "pass"): 11, ("baseline", "fail"): 29, ("restricted", "pass"): 19, ("restricted", "fail"): 69}

# The fixture's name (upstream's check id, lower-cased, then a number) -> the control it breaks, as the table names it.
CONTROLS = {
    "allowprivilegeescalation": "Privilege Escalation (restricted)",
    "apparmorprofile": "AppArmor (baseline)",
    "capabilities_baseline": "Capabilities (baseline)",
    "capabilities_restricted": "Capabilities (restricted)",
    "hostnamespaces": "Host Namespaces (baseline)",
    "hostpathvolumes": "HostPath Volumes (baseline)",
    "hostports": "Host Ports (baseline)",
    "privileged": "Privileged Containers (baseline)",
    "procmount": "/proc Mount Type (baseline)",
    "restrictedvolumes": "Volume Types (restricted)",
    "runasnonroot": "Running as Non-root (restricted)",
    "runasuser": "Running as Non-root user (restricted)",
    "seccompprofile_baseline": "Seccomp (baseline)",
    "seccompprofile_restricted": "Seccomp (restricted)",
    "selinuxoptions": "SELinux (baseline)",
    "sysctls": "Sysctls (baseline)",
    "windowshostprocess": "HostProcess (baseline)",
}


def _fixtures(outcome: str) -> list:
    return [
        pytest.param(level, path, id=f"{level}/{path.name}")
        for level in LEVELS
        for path in sorted((FIXTURES / level / VERSION / outcome).glob("*.yaml"))
    ]


def _load(path: Path) -> dict:
    obj = yaml.safe_load(path.read_text())
    assert obj["kind"] == "Pod", f"{path.name}: {obj['kind']}"  # upstream's fixtures are all Pods
    return obj


def test_every_upstream_fixture_is_vendored():
    found = {
        (level, outcome): len(list((FIXTURES / level / VERSION / outcome).glob("*.yaml"))) for level, outcome in COUNTS
    }
    assert found == COUNTS


@pytest.mark.parametrize(("level", "path"), _fixtures("pass"))
def test_upstream_pass_fixture_is_admitted(level, path):
    assert violations(_load(path), LEVELS[level]) == []


@pytest.mark.parametrize(("level", "path"), _fixtures("fail"))
def test_upstream_fail_fixture_is_refused_for_its_control(level, path):
    found = violations(_load(path), LEVELS[level])
    control = CONTROLS[path.stem.rstrip("0123456789")]
    assert any(f": {control}: " in line for line in found), found


def test_levels_select_the_profile():
    """A pod that only the restricted profile refuses passes baseline: the level filter is not a no-op."""
    pod = _load(FIXTURES / "restricted" / VERSION / "fail" / "runasnonroot0.yaml")
    assert violations(pod, LEVELS["baseline"]) == []
    assert violations(pod, LEVELS["restricted"])
