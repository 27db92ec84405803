"""`python -m bsnn` (and `torchrun -m bsnn`) runs the CLI."""

import sys

from bsnn.cli import main

sys.exit(main())
