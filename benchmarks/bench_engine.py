"""Engine benchmark: runs `bsnn bench engine` and prints its table (see benchmarks/RESULTS.md).

    python benchmarks/bench_engine.py [--quick] [--json out.json]
"""

import sys

from bsnn.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "engine", *sys.argv[1:]]))
