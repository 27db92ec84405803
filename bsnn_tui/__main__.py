"""`python -m bsnn_tui`: the same as the `bsnn-tui` console script (used by --serve)."""

import sys

from bsnn_tui.app import main

sys.exit(main())
