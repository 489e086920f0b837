"""No credential is committed: the repository holds secret references, never secret values."""

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# What a credential looks like: cloud keys, private keys, passwords or secrets given a literal value.
CREDENTIAL = re.compile(
    r"AKIA[0-9A-Z]{16}"
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----"
    r"|(?i:(aws_secret_access_key|secret_key|api_key|token|password)\s*[:=]\s*['\"]?[A-Za-z0-9/+_\-]{12,})"
)
# Test doubles, named as such where they appear.
ALLOWED = ("AKIAEXAMPLEKEYID0000", "example-secret-value", "pg-example-password")


def _tracked_files() -> list[Path]:
    try:
        listed = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [REPO / name for name in listed.splitlines() if (REPO / name).is_file()]


def test_no_tracked_file_holds_a_credential():
    found = []
    for path in _tracked_files():
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue  # images
        for number, line in enumerate(text.splitlines(), 1):
            match = CREDENTIAL.search(line)
            if match and not any(allowed in line for allowed in ALLOWED):
                found.append(f"{path.relative_to(REPO)}:{number}: {match.group(0)[:40]}")
    assert not found, found


@pytest.mark.parametrize(
    "line",
    # Assembled at run time so this file holds no credential-shaped line of its own.
    [
        "aws_access_key_id = " + "AKIA" + "IOSFODNN7EXAMPLF",
        "password: " + "hunter2hunter2x",
        "-----BEGIN RSA " + "PRIVATE KEY-----",
    ],
)
def test_the_scan_recognizes_a_credential(line):
    assert CREDENTIAL.search(line)
