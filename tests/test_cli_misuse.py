"""Misuse of the CLI (issue 26): typos get the nearest flag or choice in two lines, nothing is
written before a bad model name or run id is refused, errors are said once, the output is in
words, an existing checkpoint is never overwritten, and odd files in a job dir neither hang
nor stop `bsnn runs`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console

import bsnn
import bsnn.bench
import bsnn.train
from bsnn.cli import build_parser, main
from bsnn.config import RunConfig
from bsnn.errors import ConfigError
from bsnn.recipes import preset

ROOT = Path(__file__).resolve().parent.parent


def convert_args(model: Path | str, job_dir: Path, *extra: str) -> list[str]:
    return ["convert", "--model", str(model), "--dataset", "digits", "--time", "4",
            "--eval_size", "16", "--batch-size", "16", "--norm", "16", "--job-dir",
            str(job_dir), "--quiet", *extra]


def usage_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> list[str]:
    """argv refused by the parser: exit 2, no usage, at most two lines (problem, fix)."""
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2, err
    assert "usage:" not in err
    lines = err.strip().splitlines()
    assert 1 <= len(lines) <= 2, err
    return lines


def refused(capsys: pytest.CaptureFixture[str], argv: list[str], *words: str) -> str:
    """A BsnnError: exit 2, one error and one fix, no traceback, naming `words`."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and "error:" in err and "fix:" in err, err
    flat = " ".join(err.split())
    for word in words:
        assert word in flat, (word, flat)
    return flat


# --- 1. typos ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("argv", "hint"), [
    (["convert", "--tme", "4"], "did you mean --time?"),
    (["convert", "--dataset", "digit"], "did you mean digits?"),
    (["covnert"], "did you mean convert?"),
    (["export", "--nir", "x.nir", "--pooling", "summ"], "did you mean sum?"),
])
def test_a_typo_names_the_nearest_flag_or_choice(capsys: pytest.CaptureFixture[str],
                                                 argv: list[str], hint: str) -> None:
    problem, fix = usage_error(capsys, argv)
    assert "error:" in problem and fix.startswith("fix:") and hint in fix


def test_a_typo_is_reported_by_its_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    problem, _ = usage_error(capsys, ["convert", "--tme", "4"])
    assert problem.startswith("bsnn convert: error: unrecognized arguments: --tme")


def test_eval_size_takes_both_spellings_and_export_takes_it() -> None:
    parser = build_parser()
    for flag in ("--eval_size", "--eval-size"):
        assert parser.parse_args(["convert", flag, "7"]).eval_size == 7
        assert parser.parse_args(["export", "--nir", "x.nir", flag, "10"]).eval_size == 10
    assert "--eval_size" in (ROOT / "docs" / "nir.md").read_text()  # the doc it agrees with


def test_export_checks_the_eval_size_it_takes(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    refused(capsys, ["export", "--nir", str(tmp_path / "x.nir"), "--eval_size", "0"],
            "eval_size is 0")
    assert not (tmp_path / "x.nir").exists()


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"bsnn {bsnn.__version__}"


# --- 2. a bad model name: before a run folder, said once --------------------------------------

def test_a_misspelt_bundled_model_writes_nothing_and_is_said_once(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job = tmp_path / "job"
    args = convert_args("bundled:digits-binray", job)
    args.remove("--quiet")
    flat = refused(capsys, args, "no bundled model", "did you mean bundled:digits-binary?")
    assert flat.count("no bundled model") == 1
    assert not job.exists()


def test_an_error_during_a_run_is_said_once(tiny_model: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    args = convert_args(tiny_model, tmp_path / "job", "--data", str(tmp_path / "nowhere"))
    args[args.index("digits")] = "cifar10"
    args.remove("--quiet")
    assert main(args) == 2
    captured = capsys.readouterr()
    said = captured.out + captured.err
    assert said.count("cifar10 not found") == 1, said


# --- 3. words, not Python literals; one --json convention -------------------------------------

def test_info_prints_words(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "bundled:digits-binary"]) == 0
    binary = " ".join(capsys.readouterr().out.split())
    assert main(["info", "bundled:digits-fp"]) == 0
    fp = " ".join(capsys.readouterr().out.split())
    for text in (binary, fp):
        assert not re.search(r"=|\bTrue\b|\bFalse\b|\bNone\b|\[", text), text
    assert "binary: yes" in binary and "betas: 0.9, 0.999" in binary
    assert "weight decay until: never" in fp and "lr milestones: 20, 26" in fp
    assert "mean / std 0.3054 / 0.3761" in fp


def test_training_says_1_epoch() -> None:
    from bsnn.cli.train import TrainPrinter
    from bsnn.train import TrainStart

    console = Console(record=True, width=300)
    printer = TrainPrinter(console, SimpleNamespace(start=lambda: None))  # type: ignore[arg-type]
    printer(TrainStart(preset("digits-fp"), 0, 100, 1, "cpu"))
    printer(TrainStart(preset("digits-fp"), 0, 100, 2, "cpu"))
    one, two = console.export_text().splitlines()
    assert "1 val image, 30 epochs" in one and "2 val images" in two
    printer(TrainStart(replace(preset("digits-fp"), epochs=1), 0, 100, 2, "cpu"))
    assert "1 epoch," in console.export_text().splitlines()[-1]


@pytest.fixture
def fake_bench(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """bsnn.bench's measurements replaced by fixed figures; the devices asked for."""
    devices: list[str] = []

    def engine(device: Any, **_: Any) -> dict[str, Any]:
        devices.append(str(device))
        return {"device": str(device), "engine_img_steps_per_s": 1000.0}

    monkeypatch.setattr(bsnn.bench, "bench_engine", engine)
    monkeypatch.setattr(bsnn.bench, "bench_threshold_percentile",
                        lambda device: {"calibration_s": 0.5})
    return devices


def test_bench_json_prints_and_out_writes(fake_bench: list[str], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    assert main(["bench", "engine", "--quick", "--device", "cpu", "--json", "--out",
                 str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)  # stdout is the JSON alone
    assert printed == json.loads(out.read_text())
    assert printed["devices"][0]["calibration_s"] == 0.5 and fake_bench == ["cpu"]
    assert main(["bench", "engine", "--quick", "--device", "auto"]) == 0
    assert "engine benchmark" in capsys.readouterr().out


def test_bench_takes_the_devices_the_other_commands_take(
        fake_bench: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    problem, _ = usage_error(capsys, ["bench", "engine", "--device", "gpu0"])
    assert "gpu0" in problem
    import torch
    if not torch.cuda.is_available():
        refused(capsys, ["bench", "engine", "--device", "cuda:0"], "CUDA")
    assert fake_bench == []


# --- 4. an existing checkpoint is not overwritten; the README says what bsnn is ---------------

def test_train_refuses_to_overwrite_a_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "digits-binary.pt"
    out.write_bytes(b"the 99 % model")
    trained: list[Any] = []

    def train(recipe: Any, path: Any, **kw: Any) -> Any:
        trained.append((path, kw["resume"]))
        return SimpleNamespace(best_accuracy=0.96, best_epoch=0, seconds=1.0, out=path,
                               last=path)

    monkeypatch.setattr(bsnn.train, "train", train)
    args = ["train", "--preset", "digits-binary", "--epochs", "1", "--out", str(out)]
    refused(capsys, args, str(out), "exists already", "--force", "--resume")
    assert out.read_bytes() == b"the 99 % model" and trained == []
    assert main([*args, "--force"]) == 0
    assert trained == [(str(out), False)]


def test_readme_train_commands_each_have_their_own_out() -> None:
    readme = (ROOT / "README.md").read_text()
    block = readme.split("### Train", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = re.split(r"\n(?=bsnn )", block.replace("\\\n", " ").strip())
    outs = [re.search(r"--out (\S+)", c) for c in commands if c.startswith("bsnn train")]
    assert all(outs), commands
    names = [m.group(1) for m in outs if m]
    assert len(names) == len(set(names)), names


def test_readme_says_what_bsnn_is_first() -> None:
    readme = (ROOT / "README.md").read_text()
    head = readme.split("```bash\npip install -e . && bsnn-tui --start\n```\n\n```bash\n"
                        "pip install -e \".[test]\" && pytest\n```\n\n", 1)
    assert len(head) == 2 and head[0] == "# bsnn\n\n"  # the two commands stay at the top
    assert head[1].startswith("**bsnn** converts")


# --- 6. odd files: a FIFO never hangs, a folder never stops the listing -----------------------

def run_cli(*argv: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """`python -m bsnn ARGV` in its own process: a hang fails the test after `timeout`."""
    return subprocess.run([sys.executable, "-m", "bsnn", *argv], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def test_runs_skips_a_fifo_and_a_folder_named_events_jsonl(tmp_path: Path) -> None:
    from test_tui_support import fake_events, write_run

    good = tmp_path / "20261202-074512-a1b2c3"
    write_run(good, fake_events(good))
    (tmp_path / "20261202-074513-fifo").mkdir()
    os.mkfifo(tmp_path / "20261202-074513-fifo" / "events.jsonl")
    (tmp_path / "20261202-074514-dir" / "events.jsonl").mkdir(parents=True)
    done = run_cli("runs", str(tmp_path), "--json")
    assert done.returncode == 0, done.stderr
    assert [r["run_id"] for r in json.loads(done.stdout)] == [good.name]
    for name in ("20261202-074513-fifo", "20261202-074514-dir"):
        assert f"skipped {tmp_path / name}: its events.jsonl is not a regular file" \
            in done.stderr


def test_a_fifo_as_the_model_is_not_a_regular_file(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo.pt")
    done = run_cli(*convert_args(tmp_path / "fifo.pt", tmp_path / "job"))
    assert done.returncode == 2, done.stderr
    flat = " ".join(done.stderr.split())
    assert "fifo.pt is not a regular file" in flat and "is empty" not in flat
    assert not (tmp_path / "job").exists()


# --- 7. --image-size says what happens --------------------------------------------------------

def test_image_size_help_tells_the_real_default(tmp_path: Path) -> None:
    from fixtures_data import write_image_folder

    from bsnn.data import load_split

    help_text = " ".join(build_parser()._subparsers._group_actions[0]  # type: ignore[union-attr]
                         .choices["convert"].format_help().split())
    assert "(default: 32; the other data sets keep their own size)" in help_text
    for split in ("train", "val"):
        write_image_folder(tmp_path / split, {"a": 2, "b": 2}, size=(40, 36))
    _, info = load_split("imagefolder", "val", tmp_path)
    assert info.input_shape == (3, 32, 32)  # resized, not the images' own 40x36


# --- 8. run ids are names; results files go where they are told ------------------------------

@pytest.mark.parametrize("run_id", ["../escaped", "/tmp/absolute", "a/b", ".hidden"])
def test_a_run_id_that_is_a_path_is_refused_before_anything_is_written(
        tiny_model: Path, tmp_path: Path, run_id: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match="not a plain name"):
        RunConfig(run_id=run_id).validate()
    job = tmp_path / "job"
    refused(capsys, convert_args(tiny_model, job, "--run-id", run_id), "not a plain name")
    assert not job.exists() and not (tmp_path / "escaped").exists()


def test_simulate_refuses_a_run_id_that_is_a_path(tiny_model: Path, tmp_path: Path) -> None:
    job = tmp_path / "a" / "job"
    snn = bsnn.convert(tiny_model, "digits", norm=16, device="cpu")
    with pytest.raises(ConfigError, match="not a plain name"):
        bsnn.simulate(snn, "digits", job_dir=job, run_id="../../x", time=4, eval_size=16)
    assert not job.exists() and not (tmp_path / "x").exists()


def test_results_file_a_name_goes_in_results_and_a_path_is_taken_as_given(
        tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    job = tmp_path / "a" / "b" / "job"
    assert main(convert_args(tiny_model, job, "--results-file", "mine.csv")) == 0
    assert (job / "results" / "mine.csv").read_text().startswith("seed,")
    monkeypatch.chdir(tmp_path / "a" / "b")
    assert main(convert_args(tiny_model, job, "--results-file", "../../esc.csv")) == 0
    assert (tmp_path / "esc.csv").read_text().startswith("seed,")


def test_a_symlink_planted_as_the_results_file_is_not_followed(
        tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job, target = tmp_path / "job", tmp_path / "elsewhere.txt"
    target.write_text("precious\n")
    (job / "results").mkdir(parents=True)
    (job / "results" / "sim_result.txt").symlink_to(target)
    flat = refused(capsys, convert_args(tiny_model, job), "symbolic link", "remove the link")
    assert str(job / "results" / "sim_result.txt") in flat.replace(" ", "")  # rich folds paths
    assert target.read_text() == "precious\n"
