"""ANN -> SNN conversion: the chain (BN folded), thresholds from activation percentiles, spiking
layers; `correction` is the optional SNN calibration that follows."""

from bsnn.conversion.chain import Group, chain_forward, extract_chain
from bsnn.conversion.convert import Conversion, convert
from bsnn.conversion.percentile import StreamingPercentile

__all__ = ["Conversion", "Group", "StreamingPercentile", "chain_forward", "convert",
           "extract_chain"]
