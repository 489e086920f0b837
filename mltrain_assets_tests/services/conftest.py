"""Real services: where CI provides them (MLTRAIN_REQUIRE_SERVICES=1) their absence is a failure."""

import os

import pytest


def service_missing(message: str):
    if os.environ.get("MLTRAIN_REQUIRE_SERVICES") == "1":
        pytest.fail(message)
    pytest.skip(message)
