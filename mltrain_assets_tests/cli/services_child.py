"""A command with services, for test_services.py: ``python -m mltrain_assets_tests.cli.services_child GRACE_S``.

Starts three: one that stops on SIGTERM, one that ignores it, and one that ignores it and starts a
process in a session of its own (out of reach of its group); then waits for a stop signal and exits
with 128 + its number.
"""

import os
import sys
import time

from mltrain_assets.cli.services import Services, StopSignal

COOPERATIVE = "import time; time.sleep(600)"
STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
ESCAPING = (
    "import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    f"subprocess.Popen([sys.executable, '-c', {STUBBORN!r}], start_new_session=True); time.sleep(600)"
)


def main(grace_s: float) -> int:
    try:
        with Services("test services", grace_s=grace_s) as services:
            for code in (COOPERATIVE, STUBBORN, ESCAPING):
                services.start([sys.executable, "-c", code], env=dict(os.environ))
            while True:
                time.sleep(1)
    except StopSignal as stop:
        return 128 + stop.signum


if __name__ == "__main__":
    sys.exit(main(float(sys.argv[1])))
