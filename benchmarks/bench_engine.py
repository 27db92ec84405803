"""Engine benchmark: runs `bsnn bench engine` and prints its table (see benchmarks/RESULTS.md).

    python benchmarks/bench_engine.py [--quick] [--json] [--out out.json]
    python benchmarks/bench_engine.py --suite [--repeat 5] [--threads N] [--out out.json]

--suite: binary (+-1, sign mode) and full-precision vgg15ab at batch 16 and 32, T=32, timed
in turns in one process: the dense floor (the ANN with its effective float32 weights, T
times), the engine's float32 and int8 paths, SpikingJelly (the bench extra); whether float32's
and int8's counts are identical, and peak memory against the ANN's.
"""

import sys

from bsnn.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "engine", *sys.argv[1:]]))
