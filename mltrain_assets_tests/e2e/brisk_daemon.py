"""``dagster-daemon run`` for the end-to-end stack, its backfill loop ticking every 2 s instead of 30 s.

Dagster 1.13 fixes the backfill daemon's pause between iterations at ``DEFAULT_DAEMON_INTERVAL_SECONDS``
(30 s, no instance setting), and an asset backfill advances one layer of the asset graph per iteration: the
e2e backfills spent most of their time asleep. Same daemon, same code paths, a shorter pause.
"""

import dagster._daemon.controller as controller
from dagster._daemon.cli import main

BACKFILL_LOOP_S = 2

if __name__ == "__main__":
    if not hasattr(controller, "DEFAULT_DAEMON_INTERVAL_SECONDS"):
        raise SystemExit(
            "Dagster no longer has DEFAULT_DAEMON_INTERVAL_SECONDS: update mltrain_assets_tests/e2e/brisk_daemon.py"
        )
    controller.DEFAULT_DAEMON_INTERVAL_SECONDS = BACKFILL_LOOP_S
    main()
