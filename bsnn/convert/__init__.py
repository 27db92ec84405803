"""ANN -> SNN conversion: chain extraction (BN folding), calibration, spiking layers."""

from bsnn.convert.chain import Group, chain_forward, extract_chain
from bsnn.convert.convert import Conversion, convert
from bsnn.convert.percentile import StreamingPercentile

__all__ = ["Conversion", "Group", "StreamingPercentile", "chain_forward", "convert",
           "extract_chain"]
