"""torch.distributed for runs launched by torchrun: who am I, join the group, split the work.

torchrun starts one process per device and tells each its place through the environment
(WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT); without those variables everything
here is a no-op for one process, so a plain `bsnn convert` takes the same code path. Evaluation
is split in whole batches of the 1-process order (rank r takes global batches r, r+N, ...), so
every image is counted once, batch boundaries and Poisson seeds (seed, batch, step) are those of
a 1-process run, and its counters come out identical. Never hangs forever: the group has a
timeout (BSNN_DIST_TIMEOUT_S, default 600 s) and a lost peer becomes a RankFailed error.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from bsnn.errors import BsnnError, ConfigError, DeviceError

TIMEOUT_ENV = "BSNN_DIST_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 600.0


class RankFailed(BsnnError):
    """Another process of the group failed, was killed, or could not be reached."""

    exit_code = 1


@dataclass(frozen=True)
class World:
    """This process's place in the group; size 1 when not launched by torchrun."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        """Rank 0 alone writes files and reports progress."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not a number",
                          "launch with torchrun, which sets it, or unset it") from None


def world() -> World:
    """Rank, world size and local rank from torchrun's environment (read, nothing joined)."""
    size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", rank if size > 1 else 0)
    if size < 1 or not 0 <= rank < size:
        raise ConfigError(f"RANK={rank} does not fit WORLD_SIZE={size}",
                          "launch with torchrun, which sets both, or unset them")
    return World(rank, size, local)


def local_device(device: torch.device, w: World | None = None) -> torch.device:
    """Under torchrun each process owns one GPU: a CUDA device becomes cuda:LOCAL_RANK."""
    w = w or world()
    if device.type != "cuda" or not w.distributed:
        return device
    count = torch.cuda.device_count()
    if w.local_rank >= count:
        raise DeviceError(f"local rank {w.local_rank} has no GPU: this node has {count}",
                          f"pass --nproc-per-node {count} (at most one process per GPU)")
    return torch.device("cuda", w.local_rank)


def backend_for(device: torch.device) -> str:
    """nccl moves CUDA tensors GPU to GPU; gloo is the CPU backend."""
    return "nccl" if device.type == "cuda" else "gloo"


def timeout_s() -> float:
    """How long a rendezvous or a collective may wait for the others before failing."""
    value = os.environ.get(TIMEOUT_ENV, "")
    try:
        seconds = float(value) if value else DEFAULT_TIMEOUT_S
    except ValueError:
        raise ConfigError(f"{TIMEOUT_ENV}={value!r} is not a number of seconds",
                          f"e.g. {TIMEOUT_ENV}=600") from None
    if seconds <= 0:
        raise ConfigError(f"{TIMEOUT_ENV}={value} must be positive", f"e.g. {TIMEOUT_ENV}=600")
    return seconds


def init_from_env(device: torch.device) -> bool:
    """Join torchrun's group for `device`; True when this call created it (then `shutdown`).

    A no-op for one process or when the caller already initialised the group.
    """
    w = world()
    if not w.distributed or dist.is_initialized():
        return False
    if not dist.is_available():
        raise ConfigError("this torch build has no torch.distributed", "install a standard torch")
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(k)]
    if missing:
        raise ConfigError(f"WORLD_SIZE={w.size} but {', '.join(missing)} is not set",
                          "launch with torchrun (it sets them), or unset WORLD_SIZE")
    seconds = timeout_s()
    if device.type == "cuda":
        torch.cuda.set_device(device)
    try:
        dist.init_process_group(backend_for(device), timeout=timedelta(seconds=seconds),
                                rank=w.rank, world_size=w.size)
    except (RuntimeError, ValueError) as e:
        raise RankFailed(
            f"rank {w.rank} could not join the group of {w.size} processes at "
            f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']} within {seconds:g} s: "
            f"{str(e).splitlines()[0] if str(e) else type(e).__name__}",
            "start every node with the same --nnodes, --rdzv-endpoint/--master-addr and port; "
            f"raise {TIMEOUT_ENV} if the nodes start far apart") from None
    return True


def shutdown(created: bool) -> None:
    """Leave the group if `init_from_env` created it."""
    if created and dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def collective(what: str) -> Iterator[None]:
    """A collective that fails because a peer died or timed out says so in one line."""
    try:
        yield
    except (RuntimeError, dist.DistError) as e:  # DistBackendError, gloo's closed connection
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RankFailed(
            f"rank {dist.get_rank()} lost contact with the group during {what}: {first}",
            "another rank failed, was killed or timed out; its own error is in its output "
            "(torchrun's summary names it)") from None


def num_batches(n_items: int, batch_size: int) -> int:
    return -(-n_items // batch_size)


def shard_batches(n_items: int, batch_size: int, rank: int, size: int) -> list[tuple[int, range]]:
    """Rank `rank`'s global batches r, r+size, ...: (global batch index, item indices).

    Batch b holds items [b*batch, (b+1)*batch) as in one process, so no image is padded in
    or counted twice, and per-batch seeds (Poisson) follow the global index.
    """
    return [(b, range(b * batch_size, min(n_items, (b + 1) * batch_size)))
            for b in range(rank, num_batches(n_items, batch_size), size)]


def rounds(n_items: int, batch_size: int, size: int) -> int:
    """Lock-step rounds of one batch per rank; ranks without a batch left send an empty row."""
    return -(-num_batches(n_items, batch_size) // size)


def all_reduce_counts(counts: torch.Tensor) -> torch.Tensor:
    """Sum `counts` over the group in place; every rank gets the same sums."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        with collective("a counter sum"):
            dist.all_reduce(counts, op=dist.ReduceOp.SUM)
    return counts


def gather_rows(row: torch.Tensor) -> torch.Tensor:
    """Every rank's `row` stacked (size, n), so rank 0 can add batches in global order: float
    sums then come out bit-identical to a 1-process run, not just close."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return row[None]
    rows = [torch.empty_like(row) for _ in range(dist.get_world_size())]
    with collective("a batch boundary"):
        dist.all_gather(rows, row.contiguous())
    return torch.stack(rows)


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's picklable `obj` (error messages: rare, small)."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    with collective("an error report"):
        dist.all_gather_object(out, obj)
    return out


def broadcast_tensors(tensors: Iterable[torch.Tensor | None], src: int = 0) -> None:
    """Overwrite each tensor with rank `src`'s values, in place (each distinct tensor once)."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return
    seen: set[int] = set()
    with collective("the threshold broadcast"):
        for t in tensors:
            if t is None or id(t) in seen:
                continue
            seen.add(id(t))
            if t.is_contiguous():
                dist.broadcast(t.data, src)
            else:  # an expanded or strided view: send a copy, write it back
                buf = t.detach().contiguous()
                dist.broadcast(buf, src)
                t.data.copy_(buf)


def broadcast_thresholds(net: Any, ann: Iterable[Any] = ()) -> None:
    """Make every rank simulate rank 0's network: thresholds, weights, biases, initial
    potentials and input scale (a `SpikingNetwork`), and the ANN chain's groups (`ann`)."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return
    tensors: list[torch.Tensor | None] = []
    for layer in net.layers:
        tensors += [*layer.ops.parameters(), *layer.ops.buffers()]
        tensors += [layer.bias, layer.threshold, layer.lam, layer.spike_amplitude,
                    layer.fan_out, layer.v_init]
    for group in ann:
        for op in group.ops:
            tensors += [*op.parameters(), *op.buffers()]
        tensors.append(group.bias)
    scale = torch.tensor([float(net.input_scale)], dtype=torch.float64,
                         device=next((t.device for t in tensors if t is not None), "cpu"))
    broadcast_tensors([*tensors, scale])
    net.input_scale = float(scale.item())


__all__ = ["RankFailed", "World", "all_reduce_counts", "backend_for", "broadcast_tensors",
           "broadcast_thresholds", "gather_objects", "gather_rows", "init_from_env",
           "local_device", "num_batches", "rounds", "shard_batches", "shutdown", "world"]
