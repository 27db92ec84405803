"""torchrun / torch.distributed on CPU (gloo, loopback): a 2-process run equals a 1-process run.

One real `torchrun -m bsnn convert` (the CLI path: env, group, rank-0-only files), and one
2-process group spawned here that runs the other cases back to back (a Poisson run with uneven
shards, a rank that fails, DDP training and its resume), so the processes start only twice.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp

from bsnn.config import RunConfig
from bsnn.distributed import RankFailed, rounds, shard_batches
from bsnn.events import BatchDone, Failed, Finished
from bsnn.pipeline.runner import run
from bsnn.runlog import read_events

REPO = Path(__file__).resolve().parent.parent
MODEL = "bundled:digits-fp"
CHILD_ENV = {"OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "BSNN_DIST_TIMEOUT_S": "60"}
VOLATILE = {"time", "seq", "elapsed_s", "ranks"}  # timing, and the per-rank progress field


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config(job_dir: Path, run_id: str, **changes: Any) -> RunConfig:
    fields: dict[str, Any] = dict(model=MODEL, dataset="digits", time=16, eval_size=100,
                                  batch_size=32, norm=64, device="cpu", job_dir=str(job_dir),
                                  run_id=run_id)
    return RunConfig(**{**fields, **changes})


def batches(run_dir: Path) -> list[dict[str, Any]]:
    return [{k: v for k, v in e.to_dict().items() if k not in VOLATILE}
            for e in read_events(run_dir) if isinstance(e, BatchDone)]


def assert_same_results(one: Path, many: Path) -> None:
    """Per-step correct counts, per-layer spikes and synops, after every batch: identical."""
    a, b = batches(one), batches(many)
    assert len(a) == len(b) > 0
    assert a == b
    sa = json.loads((one / "summary.json").read_text())
    sb = json.loads((many / "summary.json").read_text())
    for key in ("images", "accuracy_per_step", "ann_accuracy", "layers", "synops_per_image"):
        assert sa[key] == sb[key], key


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """The reference runs use one thread, as every torchrun child does."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_shards_cover_every_image_once_in_whole_global_batches() -> None:
    for n, batch, size in [(100, 32, 2), (70, 16, 2), (5, 2, 4), (3, 8, 4), (64, 32, 2)]:
        shards = [shard_batches(n, batch, r, size) for r in range(size)]
        items = sorted(i for shard in shards for _, idx in shard for i in idx)
        assert items == list(range(n))
        for r, shard in enumerate(shards):
            assert [b for b, _ in shard] == list(range(r, -(-n // batch), size))
            assert all(idx == range(b * batch, min(n, (b + 1) * batch)) for b, idx in shard)
            assert len(shard) <= rounds(n, batch, size)


def test_torchrun_convert_equals_one_process(tmp_path: Path, one_thread: None) -> None:
    job = tmp_path / "job"
    run(config(job, "one"))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
           "-m", "bsnn", "convert", "--model", MODEL, "--dataset", "digits", "--time", "16",
           "--eval_size", "100", "--batch-size", "32", "--norm", "64", "--device", "cpu",
           "--job-dir", str(job), "--run-id", "two", "--quiet"]
    env = {**os.environ, **CHILD_ENV, "PYTHONPATH": str(REPO)}
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert_same_results(job / "one", job / "two")
    # rank 0 alone wrote: one run folder, one results line; its events show both ranks
    assert sorted(p.name for p in job.iterdir()) == ["one", "results", "two"]
    assert len((job / "results" / "sim_result.txt").read_text().splitlines()) == 3  # header+2
    events = read_events(job / "two")
    assert events[0].distributed == {"world_size": 2, "backend": "gloo"}
    last = [e for e in events if isinstance(e, BatchDone)][-1]
    assert last.ranks == [64, 36] and last.images == 100  # 100 = 32+32+32+4: uneven
    assert isinstance(events[-1], Finished)
    # what a viewer (dashboard, `bsnn runs`, summary.md) shows of it
    summary = json.loads((job / "two" / "summary.json").read_text())
    assert summary["distributed"] == {"world_size": 2, "backend": "gloo",
                                      "images_per_rank": [64, 36]}
    assert "x 2 processes (gloo)" in (job / "two" / "summary.md").read_text()
    from bsnn.summary import Summary
    from bsnn_tui.widgets.progress import throughput_line
    assert "ranks 64 + 36" in throughput_line(Summary.from_dict(summary))


# ---- a 2-process group spawned here, running several cases --------------------------------

def _group_worker(rank: int, size: int, port: int, job: str, out: str) -> None:
    """One rank: join the group, then a Poisson run, a failing run, DDP training + resume."""
    os.environ.update(CHILD_ENV, MASTER_PORT=str(port), WORLD_SIZE=str(size), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from dataclasses import replace

    from bsnn import distributed
    from bsnn.recipes import PRESETS
    from bsnn.snn.engine import Engine
    from bsnn.train import train

    created = distributed.init_from_env(torch.device("cpu"))
    report: dict[str, Any] = {}
    # Poisson encoding, 70 images in batches of 16: rank 0 takes 3 batches, rank 1 two
    report["poisson"] = run(config(Path(job), "poisson", encoding="poisson", eval_size=70,
                                   batch_size=16))["status"]

    # rank 1 fails at its first batch (global batch 1): both ranks stop at that boundary
    original = Engine.run_batch

    def broken(self: Engine, x: torch.Tensor, labels: torch.Tensor, batch_index: int = 0,
               keep_totals: bool = False) -> Any:
        if rank == 1:
            raise RuntimeError("injected failure")
        return original(self, x, labels, batch_index, keep_totals)

    Engine.run_batch = broken  # type: ignore[method-assign]
    try:
        run(config(Path(job), "fail"))
        report["fail"] = "no error"
    except Exception as e:
        report["fail"] = f"{type(e).__name__}: {e}"
    finally:
        Engine.run_batch = original  # type: ignore[method-assign]

    # DDP: one epoch, then resume for a second
    recipe = replace(PRESETS["digits-binary"], epochs=1, batch_size=32, lr_step=0)
    first = train(recipe, Path(job) / "ddp.pt", device="cpu")
    second = train(replace(recipe, epochs=2), Path(job) / "ddp.pt", device="cpu", resume=True)
    report["train"] = [first.best_accuracy, [e.epoch for e in second.history],
                       second.best_accuracy]
    distributed.shutdown(created)
    Path(out, f"rank{rank}.json").write_text(json.dumps(report))


@pytest.fixture(scope="module")
def group(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    job, out = tmp_path_factory.mktemp("group-job"), tmp_path_factory.mktemp("group-out")
    context = mp.start_processes(_group_worker, args=(2, free_port(), str(job), str(out)),
                                 nprocs=2, join=False, start_method="spawn")
    deadline = time.monotonic() + 150
    while not context.join(timeout=1):
        if time.monotonic() > deadline:  # never hang the test run
            for p in context.processes:
                p.kill()
            pytest.fail("the 2-process group did not finish in 150 s")
    return job, [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


def test_poisson_with_uneven_shards_equals_one_process(
        group: tuple[Path, list[dict[str, Any]]], tmp_path: Path, one_thread: None) -> None:
    job, reports = group
    assert [r["poisson"] for r in reports] == ["finished", "finished"]
    run(config(tmp_path, "one", encoding="poisson", eval_size=70, batch_size=16))
    assert_same_results(tmp_path / "one", job / "poisson")
    last = [e for e in read_events(job / "poisson") if isinstance(e, BatchDone)][-1]
    assert last.ranks == [38, 32]  # 16+16+6 and 16+16
    assert not (job / "poisson.rank1").exists()


def test_a_failing_rank_fails_the_run_clearly(group: tuple[Path, list[dict[str, Any]]]) -> None:
    job, reports = group
    assert reports[1]["fail"] == "RuntimeError: injected failure"  # its own error, unchanged
    assert reports[0]["fail"].startswith(f"{RankFailed.__name__}: rank 1 of 2 failed at batch 1")
    assert "injected failure" in reports[0]["fail"]
    events = read_events(job / "fail")
    assert isinstance(events[-1], Failed) and events[-1].error == "RankFailed"
    assert "rank 1 of 2 failed" in events[-1].message
    summary = json.loads((job / "fail" / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["images"] == 32  # rank 0's batch 0 counts


def test_ddp_training_writes_a_loadable_resumable_checkpoint(
        group: tuple[Path, list[dict[str, Any]]], one_thread: None) -> None:
    from bsnn.checkpoint import load_model, read_checkpoint
    from bsnn.data import load_split, make_loader
    from bsnn.train import evaluate, last_state_path

    job, reports = group
    assert reports[0]["train"] == reports[1]["train"]  # every rank took the same decisions
    first, resumed_epochs, best = reports[0]["train"]
    assert resumed_epochs == [1] and best >= first
    assert first > 0.3  # chance is 0.1
    model, meta = load_model(job / "ddp.pt")
    assert meta.ann_accuracy == best
    # the sharded, summed validation is exactly the whole set's accuracy
    val = make_loader(load_split("digits", "val")[0], 256)
    assert evaluate(model, val) == best
    last, _ = load_model(last_state_path(job / "ddp.pt"))
    state = read_checkpoint(last_state_path(job / "ddp.pt"))
    assert state["train_state"]["epoch"] == 2
    assert evaluate(last, val) == state["meta"]["ann_accuracy"]
    assert not (job / "ddp.rank1.pt").exists()


def test_a_missing_peer_times_out_with_a_failed_event(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(free_port()), "BSNN_DIST_TIMEOUT_S": "2"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(RankFailed, match="could not join the group of 2 processes"):
        run(config(tmp_path, "alone"))
    events = read_events(tmp_path / "alone")
    assert [e.type for e in events] == ["started", "failed"]
    assert "could not join" in events[-1].message


def test_detach_under_torchrun_is_refused_with_the_fix(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from bsnn.cli import main

    for key, value in {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}.items():
        monkeypatch.setenv(key, value)
    code = main(["convert", "--detach", "--job-dir", str(tmp_path), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2
    assert "rank 1: error: --detach cannot be used under torchrun" in err
    assert "nohup torchrun" in err
    assert list(tmp_path.iterdir()) == []  # nothing started
