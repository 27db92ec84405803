"""bsnn: binary and full-precision ANN -> spiking network conversion and simulation.

The core never imports textual or rich (see tests/test_import_hygiene.py).
"""

__version__ = "0.1.0"
