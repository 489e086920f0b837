"""``python -m mltrain_assets.cli``: the same as the ``mltrain`` command."""

import sys

from mltrain_assets.cli import main

sys.exit(main())
