"""Input encodings: the analog image as a constant current, or Poisson spikes.

Poisson draws depend only on (seed, batch, step), never on how steps are chunked, so every
simulator (the engine, the reference in the tests, bindsnet) sees the same spikes.
"""

from __future__ import annotations

import torch


def step_seed(seed: int, batch: int, step: int) -> int:
    return (seed * 1_000_003 + batch) * 100_003 + step


def poisson_step(x: torch.Tensor, scale: float, seed: int, batch: int, step: int) -> torch.Tensor:
    """Signed spikes of height `scale`: P(spike) = |x| / scale, so E[input] = x (|x| <= scale)."""
    g = torch.Generator(device=x.device)
    g.manual_seed(step_seed(seed, batch, step))
    u = torch.rand(x.shape, generator=g, device=x.device, dtype=x.dtype)
    return (u < x.abs() / scale).to(x.dtype) * x.sign() * scale


def poisson_steps(x: torch.Tensor, scale: float, seed: int, batch: int,
                  steps: range) -> torch.Tensor:
    """Steps stacked along a new leading time axis (none for an empty range)."""
    if not steps:
        return x.new_zeros((0, *x.shape))
    return torch.stack([poisson_step(x, scale, seed, batch, t) for t in steps])
