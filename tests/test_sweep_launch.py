"""`bsnn sweep --launcher local|slurm`: cells in processes other than the sweep's, through
submitit.

The local launcher runs for real (several cells at once in worker processes, each cell its own
run folder);
the Slurm launcher runs against stand-in sbatch, srun, squeue, sacct and scancel scripts first
on PATH, which record the submission and run the generated job script here, array task by
array task, as a cluster's nodes would.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_detach import wait_for

from bsnn import sweep_worker
from bsnn.cli import main
from bsnn.events import BatchDone, Started
from bsnn.jobdir import list_runs
from bsnn.runfolder import RunFolder
from bsnn.sweep_launch import ClaimedJob
from bsnn.sweep_record import SweepRecord
from bsnn.sweep_worker import claim, claim_order

submitit = pytest.importorskip("submitit", reason="the local and slurm launchers need submitit")

REPO = Path(__file__).resolve().parent.parent
SMALL = ["--time", "8", "--eval_size", "64", "--batch-size", "64", "--norm", "64"]
MODELS = ["bundled:digits-fp", "bundled:digits-binary"]


def the_record(job_dir: Path) -> SweepRecord:
    (path,) = job_dir.glob("sweep-*.json")
    return SweepRecord.load(path)


def table(job_dir: Path) -> list[dict[str, str]]:
    (path,) = job_dir.glob("sweep-*.csv")
    with open(path) as f:
        return list(csv.DictReader(f))


# ----------------------------------------------------------------------------- local

def test_local_launcher_runs_cells_in_parallel_workers(tmp_path: Path) -> None:
    code = main(["sweep", "--model", *MODELS, "--percentile", "99", "99.9", *SMALL,
                 "--launcher", "local", "--parallel", "2", "--job-dir", str(tmp_path)])
    assert code == 0
    record = the_record(tmp_path)
    runs = list_runs(tmp_path)  # every cell is an ordinary run folder, named up front
    assert sorted(r.run_id for r in runs) == [c.run_id for c in record.cells]
    assert all(c.run_id == f"{record.sweep_id}-{c.index}" for c in record.cells)
    assert all(r.summary.status == "finished" for r in runs)
    pids = {next(e for e in RunFolder(r.run_dir).events() if isinstance(e, Started)).pid
            for r in runs}
    assert len(pids) >= 2 and os.getpid() not in pids
    assert all(c.job_id for c in record.cells) and record.log_folder.is_dir()
    rows = table(tmp_path)
    assert len(rows) == 4 and {r["status"] for r in rows} == {"finished"}
    assert [(r["model"], r["percentile"]) for r in rows] == [
        (m, p) for m in MODELS for p in ("99.0", "99.9")]
    assert any(tmp_path.glob("sweep-*.png"))
    # the same command again finds the record and collects it: nothing runs twice
    again = main(["sweep", "--model", *MODELS, "--percentile", "99", "99.9", *SMALL,
                  "--launcher", "local", "--parallel", "2", "--job-dir", str(tmp_path)])
    assert again == 0 and len(list_runs(tmp_path)) == 4


def test_a_failed_cell_keeps_its_row_and_fails_the_sweep(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "no-such-model.pt"
    argv = ["sweep", "--model", "bundled:digits-fp", str(missing), *SMALL,
            "--launcher", "local", "--parallel", "2", "--job-dir", str(tmp_path / "job")]
    assert main(argv) == 1
    rows = table(tmp_path / "job")
    assert [r["status"] for r in rows] == ["finished", "failed"]
    assert rows[1]["model"] == str(missing)
    out = capsys.readouterr().out
    assert "failed (1)" in out and "no-such-model" in out
    record = the_record(tmp_path / "job")
    # --collect rebuilds the same table from the run folders, and still says it failed
    (tmp_path / "job" / f"sweep-{record.sweep_id}.csv").unlink()
    assert main(["sweep", "--collect", str(record.path)]) == 1
    assert [r["status"] for r in table(tmp_path / "job")] == ["finished", "failed"]


def test_a_worker_goes_on_after_a_failed_cell(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """One worker, two cells: the first fails before it has a run folder, the second still
    runs, and the failure's own message reaches the sweep's output."""
    missing = tmp_path / "no-such-model.pt"
    argv = ["sweep", "--model", str(missing), "bundled:digits-fp", *SMALL,
            "--launcher", "local", "--parallel", "1", "--job-dir", str(tmp_path / "job")]
    assert main(argv) == 1
    assert [r["status"] for r in table(tmp_path / "job")] == ["failed", "finished"]
    record = the_record(tmp_path / "job")
    assert record.parallel == 1 and record.cells[0].job_id == record.cells[1].job_id
    assert "no-such-model" in (record.cells[0].error or "")  # what the worker returned for it
    assert "no-such-model" in capsys.readouterr().out


def test_each_worker_tries_its_share_first_then_the_others_from_their_ends() -> None:
    assert claim_order(4, 2, 0) == [0, 2, 3, 1]
    assert claim_order(5, 2, 1) == [1, 3, 4, 2, 0]
    assert claim_order(7, 3, 2) == [2, 5, 6, 4, 3, 1, 0]
    for count, workers in [(1, 1), (5, 2), (7, 3), (2, 4)]:
        for w in range(workers):
            assert sorted(claim_order(count, workers, w)) == list(range(count))


def test_a_free_worker_takes_the_cells_another_has_not_begun(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Worker 1 comes first (worker 0 is still importing, or busy on a long cell): it runs its
    share, then worker 0's cells from the end; worker 0 then finds nothing left. Each cell runs
    once, and its claim names the worker that ran it."""
    ran: list[tuple[int, str]] = []
    configs = [{"run_id": f"s-{i}"} for i in range(5)]
    marker, claims = tmp_path / "cancel", tmp_path / "claims"
    claims.mkdir()
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for w in (1, 0):
            monkeypatch.setattr(sweep_worker, "_run_cell",
                                lambda config, _cancel, w=w: ran.append((w, config["run_id"]))
                                or "finished")
            order = [configs[i] for i in claim_order(5, 2, w)]
            said = sweep_worker.run_cells(order, 1, str(marker), (str(claims), w))
            assert said == ({} if w == 0 else {c["run_id"]: "finished" for c in order})
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    assert ran == [(1, "s-1"), (1, "s-3"), (1, "s-4"), (1, "s-2"), (1, "s-0")]
    assert {f.name: f.read_text() for f in claims.iterdir()} == {f"s-{i}": "1" for i in range(5)}
    assert not claim(claims, "s-0", 0) and claim(claims, "s-5", 0)


class _Worker:
    def __init__(self, job_id: str, done: bool) -> None:
        self.job_id, self.is_done, self.state = job_id, done, "DONE" if done else "RUNNING"

    def done(self, force_check: bool = False) -> bool:
        return self.is_done


def test_a_claimed_cells_job_is_its_workers_and_before_that_any_workers(
        tmp_path: Path) -> None:
    workers = [_Worker("11", done=True), _Worker("12", done=False)]
    job = ClaimedJob(workers, tmp_path / "s-0")  # type: ignore[arg-type]
    assert job.job_id == "11,12" and not job.done() and job.state == "PENDING"
    (tmp_path / "s-0").write_text("1")
    assert job.job_id == "12" and not job.done() and job.state == "RUNNING"
    workers[1].is_done = True
    assert job.done()
    unclaimed = ClaimedJob(workers, tmp_path / "s-1")  # type: ignore[arg-type]
    assert unclaimed.done() and unclaimed.state == "DONE"  # no worker left to begin it


def test_collect_lists_cells_not_run_yet(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    from bsnn.config import RunConfig
    from bsnn.sweep import grid, parse_variant
    from bsnn.sweep_record import plan

    cells = grid(RunConfig(job_dir=str(tmp_path), time=4), MODELS, [99.7],
                 [parse_variant("one-step")])
    record = plan(cells, tmp_path, "slurm")
    record.save()
    assert main(["sweep", "--collect", str(record.path)]) == 1
    out = capsys.readouterr().out
    assert "missing (never started, or still running) (2)" in out
    assert all(c.run_id in out for c in record.cells)


def test_launcher_flags_that_do_not_fit_are_refused(tmp_path: Path) -> None:
    job = ["--job-dir", str(tmp_path)]
    assert main(["sweep", "--parallel", "2", *job]) == 2  # inline runs one at a time
    assert main(["sweep", "--launcher", "local", "--partition", "gpu", *job]) == 2
    assert main(["sweep", "--launcher", "local", "--parallel", "0", *job]) == 2
    assert main(["sweep", "--launcher", "slurm", "--slurm-arg", "account", *job]) == 2
    assert not list(tmp_path.iterdir())  # refused before anything was written


def test_ctrl_c_cancels_the_cells_it_started(tmp_path: Path) -> None:
    """A terminal's Ctrl-C reaches the whole process group: the sweep, submitit's controllers
    and the cells. The running cells end `cancelled` with their files; the rest never start."""
    cmd = [sys.executable, "-m", "bsnn", "sweep", "--model", "bundled:digits-fp",
           "--percentile", "99", "99.5", "99.9", "--time", "1024", "--batch-size", "4",
           "--launcher", "local", "--parallel", "2", "--job-dir", str(tmp_path)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        def both_simulating() -> bool:
            assert proc.poll() is None, proc.communicate()[0]
            runs = list_runs(tmp_path)
            return len(runs) == 2 and all(
                any(isinstance(e, BatchDone) for e in RunFolder(r.run_dir).events())
                for r in runs)

        wait_for(both_simulating, timeout_s=300)
        os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, out
    record = the_record(tmp_path)
    first, second, third = record.cells
    assert "2 running cell(s) cancelled, 1 never started" in out
    assert "cancelled (2)" in out and "missing (never started, or still running) (1)" in out
    assert third.run_id in out
    for cell in (first, second):
        summary = RunFolder(record.run_dir(cell)).summary()
        assert summary.status == "cancelled" and summary.images < 360
        assert (record.run_dir(cell) / "summary.json").is_file()
    assert not record.run_dir(third).exists()
    assert [r["status"] for r in table(tmp_path)] == ["cancelled", "cancelled"]


# ----------------------------------------------------------------------------- slurm

SBATCH = r'''
import json, os, pathlib, re, subprocess, sys
state = pathlib.Path(os.environ["FAKE_SLURM"])
text = pathlib.Path(sys.argv[-1]).read_text()
flags = dict(re.findall(r"^#SBATCH --([\w-]+)=?(.*)$", text, re.M))
counter = state / "next_id"
job = int(counter.read_text()) if counter.exists() else 4000
counter.write_text(str(job + 1))
(state / f"{job}.sh").write_text(text)
with open(state / "submissions.jsonl", "a") as f:
    f.write(json.dumps({"job": job, "argv": sys.argv[1:], "flags": flags}) + "\n")
array = re.fullmatch(r"(\d+)-(\d+)(?:%(\d+))?", flags.get("array", ""))
first, last, par = (int(array[1]), int(array[2]), int(array[3] or 1)) if array else (0, 0, 1)
tasks = [f"{job}_{i}" for i in range(first, last + 1)] if array else [str(job)]
for t in tasks:
    (state / f"{t}.state").write_text("PENDING")
runner = pathlib.Path(__file__).with_name("fake_slurm_runner.py")
subprocess.Popen([sys.executable, str(runner), str(job), str(par), *tasks],
                 start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                 stderr=subprocess.DEVNULL)
print(f"Submitted batch job {job}")
'''

RUNNER = r'''
import os, pathlib, subprocess, sys
from concurrent.futures import ThreadPoolExecutor
state = pathlib.Path(os.environ["FAKE_SLURM"])
job, par, tasks = sys.argv[1], int(sys.argv[2]), sys.argv[3:]

def one(task):
    st = state / f"{task}.state"
    if st.read_text() == "CANCELLED":
        return
    array, _, index = task.partition("_")
    env = {**os.environ, "SLURM_JOB_ID": task.replace("_", "0"), "SLURM_NTASKS": "1",
           "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0",
           "SLURM_JOB_NUM_NODES": "1", "SLURM_JOB_NODELIST": "fakenode"}
    if index:
        env.update(SLURM_ARRAY_JOB_ID=array, SLURM_ARRAY_TASK_ID=index)
    st.write_text("RUNNING")
    proc = subprocess.Popen(["bash", str(state / f"{job}.sh")], env=env,
                            start_new_session=True)
    (state / f"{task}.pid").write_text(str(proc.pid))
    code = proc.wait()
    if st.read_text() != "CANCELLED":
        st.write_text("COMPLETED" if code == 0 else "FAILED")

with ThreadPoolExecutor(par) as pool:
    list(pool.map(one, tasks))
'''

SRUN = r'''
import os, sys
args, files = sys.argv[1:], {}
while args and args[0].startswith("--"):
    flag = args.pop(0)
    if flag in ("--output", "--error"):
        files[flag] = args.pop(0)
env = os.environ
for flag, fd in (("--output", 1), ("--error", 2)):
    if flag in files:
        path = (files[flag].replace("%A", env.get("SLURM_ARRAY_JOB_ID", ""))
                .replace("%a", env.get("SLURM_ARRAY_TASK_ID", ""))
                .replace("%j", env["SLURM_JOB_ID"]).replace("%t", "0"))
        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644), fd)
os.execvp(args[0], args)
'''

SACCT = r'''
import os, pathlib, sys
state = pathlib.Path(os.environ["FAKE_SLURM"])
jobs = {sys.argv[i + 1] for i, a in enumerate(sys.argv) if a == "-j"}
print("JobID|State|NodeList")
for f in sorted(state.glob("*.state")):
    if f.stem.split("_")[0] in jobs:
        print(f"{f.stem}|{f.read_text()}|fakenode")
'''

SQUEUE = r'''
import os, pathlib
state = pathlib.Path(os.environ["FAKE_SLURM"])
print("JOBID STATE")
for f in sorted(state.glob("*.state")):
    if f.read_text() in ("PENDING", "RUNNING"):
        print(f.stem, f.read_text())
'''

SCANCEL = r'''
import os, pathlib, signal, sys
state = pathlib.Path(os.environ["FAKE_SLURM"])
with open(state / "scancel.log", "a") as f:
    f.write(" ".join(sys.argv[1:]) + "\n")
for arg in sys.argv[1:]:
    for st in state.glob(f"{arg}.state" if "_" in arg else f"{arg}*.state"):
        before = st.read_text()
        st.write_text("CANCELLED")
        pid = st.with_suffix(".pid")
        if before == "RUNNING" and pid.exists():
            os.killpg(int(pid.read_text()), signal.SIGTERM)
'''


@pytest.fixture
def fake_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """sbatch, srun, squeue, sacct and scancel stand-ins first on PATH; their state (and the
    record of every submission) in the folder returned."""
    bin_dir, state = tmp_path / "bin", tmp_path / "slurm"
    bin_dir.mkdir()
    state.mkdir()
    scripts = {"sbatch": SBATCH, "srun": SRUN, "squeue": SQUEUE, "sacct": SACCT,
               "scancel": SCANCEL, "fake_slurm_runner.py": RUNNER}
    for name, body in scripts.items():
        path = bin_dir / name
        path.write_text(f"#!{sys.executable}\n{body}")
        path.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM", str(state))
    return state


def test_slurm_launcher_submits_one_job_array(fake_slurm: Path, tmp_path: Path) -> None:
    job = tmp_path / "job"
    code = main(["sweep", "--model", *MODELS, "--percentile", "99", "99.9", *SMALL,
                 "--launcher", "slurm", "--parallel", "2", "--partition", "gpu",
                 "--gpus-per-cell", "1", "--time-limit", "30", "--slurm-arg", "account=proj",
                 "--slurm-arg", "cpus-per-task=2", "--job-dir", str(job)])
    assert code == 0
    (submission,) = [json.loads(line) for line in
                     (fake_slurm / "submissions.jsonl").read_text().splitlines()]
    flags = submission["flags"]
    assert flags["array"] == "0-3%2"  # 4 cells, 2 at once
    assert (flags["partition"], flags["gpus-per-node"], flags["time"]) == ("gpu", "1", "30")
    assert (flags["account"], flags["cpus-per-task"]) == ("proj", "2")
    record = the_record(job)
    assert [c.job_id for c in record.cells] == [f"{submission['job']}_{i}" for i in range(4)]
    rows = table(job)
    assert len(rows) == 4 and {r["status"] for r in rows} == {"finished"}
    assert [r["run_id"] for r in rows] == [c.run_id for c in record.cells]
    assert all(RunFolder(record.run_dir(c)).status() == "finished" for c in record.cells)
