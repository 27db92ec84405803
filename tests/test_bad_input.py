"""Bad input: one test per case. Each must give exit code 2, a message naming the problem and a
fix, and no traceback; nothing done before the failure is lost."""

from __future__ import annotations

import errno
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from torch import nn

import bsnn.pipeline.sources
import bsnn.runlog
from bsnn.checkpoint import ModelMeta, save_checkpoint
from bsnn.cli import main
from bsnn.conversion import convert
from bsnn.errors import ConversionError
from bsnn.models import build_model
from bsnn.runlog import read_events
from bsnn.snn.engine import Engine


def convert_args(model: Path | str, job_dir: Path, *extra: str) -> list[str]:
    return ["convert", "--model", str(model), "--dataset", "digits", "--time", "8",
            "--eval_size", "32", "--batch-size", "32", "--norm", "32", "--job-dir", str(job_dir),
            "--quiet", *extra]


def fails(capsys: pytest.CaptureFixture[str], argv: list[str], *words: str) -> str:
    """Run the CLI; assert exit code 2, an error and a fix line naming `words`, no traceback."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    assert "error:" in err and "fix:" in err, err
    flat = " ".join(err.split())  # rich wraps long lines
    for word in words:
        assert word in flat, f"{word!r} not in {flat!r}"
    return flat


class RunsCode:
    """A pickle payload that would create `marker` when unpickled: the thing to refuse."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


# --- model files ---------------------------------------------------------------------------

def test_missing_model_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fails(capsys, convert_args(tmp_path / "nope.pt", tmp_path), "nope.pt", "not found",
          "check the path")


def test_empty_model_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty.pt").touch()
    fails(capsys, convert_args(tmp_path / "empty.pt", tmp_path), "empty.pt", "is empty",
          "re-save")


def test_truncated_model_file(tiny_model: Path, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    data = tiny_model.read_bytes()
    (tmp_path / "half.pt").write_bytes(data[: len(data) // 2])
    fails(capsys, convert_args(tmp_path / "half.pt", tmp_path), "half.pt",
          "truncated or corrupt", "again")


def test_model_file_that_is_not_a_checkpoint(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notes.pt").write_text("hello world\n")
    fails(capsys, convert_args(tmp_path / "notes.pt", tmp_path), "notes.pt", "checkpoint",
          "torch.save")


def test_checkpoint_of_another_arch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.save(build_model("vgg6ab", 10, (1, 8, 8)).state_dict(), tmp_path / "bare.pt")
    fails(capsys, convert_args(tmp_path / "bare.pt", tmp_path, "--arch", "vgg8ab"),
          "bare.pt does not fit this architecture", "--arch")


def test_checkpoint_of_another_class_count(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    save_checkpoint(tmp_path / "five.pt", build_model("vgg6ab", 5, (1, 8, 8)),
                    ModelMeta("vgg6ab", "digits", 5, (1, 8, 8)))
    err = fails(capsys, convert_args(tmp_path / "five.pt", tmp_path), "class")
    assert "5" in err.split("fix:")[0] and "10" in err.split("fix:")[0]


def test_pickled_whole_module_is_refused(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    torch.save(build_model("vgg6ab", 10, (1, 8, 8)), tmp_path / "whole.pt")
    fails(capsys, convert_args(tmp_path / "whole.pt", tmp_path), "refused", "whole.pt",
          "state_dict")


def test_pickle_that_runs_code_is_refused_and_nothing_runs(tmp_path: Path) -> None:
    """A real payload, in a real process: exit 2, no traceback, and the marker never appears."""
    marker = tmp_path / "pwned"
    torch.save({"state_dict": {"w": RunsCode(marker)}}, tmp_path / "evil.pt")
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"state_dict": RunsCode(marker)}))
    for name in ("evil.pt", "evil.pkl"):
        proc = subprocess.run(
            [sys.executable, "-m", "bsnn", *convert_args(tmp_path / name, tmp_path)],
            capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr
        flat = " ".join(proc.stderr.split())
        assert name in flat and "fix:" in flat
        assert not marker.exists()
    torch.load(tmp_path / "evil.pt", weights_only=False)  # the payload is real: unsafe loading
    assert marker.exists()  # does run it


# --- data ----------------------------------------------------------------------------------

def _png(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (200, 10, 10)).save(path)


def test_missing_data_dir(tiny_model: Path, tmp_path: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    argv = convert_args(tiny_model, tmp_path, "--dataset", "imagefolder", "--data",
                        str(tmp_path / "no-data"))
    fails(capsys, argv, "no-data", "does not exist", "--data")


def test_data_dir_with_the_wrong_layout(tiny_model: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    for i in range(3):  # images, but not in class folders
        _png(tmp_path / "flat" / f"{i}.png")
    argv = convert_args(tiny_model, tmp_path, "--dataset", "imagefolder", "--data",
                        str(tmp_path / "flat"), "--val-split", "0.5")
    fails(capsys, argv, "no class folders", "<class>")


def test_empty_data_set(tiny_model: Path, tmp_path: Path,
                        capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("cat", "dog"):
        (tmp_path / "data" / name).mkdir(parents=True)
    argv = convert_args(tiny_model, tmp_path, "--dataset", "imagefolder", "--data",
                        str(tmp_path / "data"), "--val-split", "0.5")
    fails(capsys, argv, "without images", "cat", "add images")


def test_eval_size_larger_than_the_data_set_uses_all(
        tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(convert_args(tiny_model, tmp_path, "--eval_size", "5000")) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "eval size 5000 is larger than the 360 images" in out and "using all" in out
    (log,) = tmp_path.glob("*/events.jsonl")
    assert read_events(log)[-1].images == 360


# --- options -------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["0", "-1", "100.5", "120", "nan"])
def test_percentile_outside_0_100(tiny_model: Path, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str], value: str) -> None:
    fails(capsys, convert_args(tiny_model, tmp_path, "--percentile", value), "percentile",
          "outside (0, 100]", "--percentile")
    assert not list(tmp_path.iterdir())  # refused before a run folder was made


@pytest.mark.parametrize(("flag", "value"), [
    ("--time", "0"), ("--time", "-3"), ("--time", "10000000"),
    ("--batch-size", "0"), ("--batch-size", "100000000"),
    ("--eval_size", "0"), ("--eval_size", "-5"),
    ("--norm", "0"), ("--norm", "1000000000"),
    ("--readout-delay", "8"), ("--readout-delay", "-1"),  # T is 8
    ("--snn-calibration-size", "0"), ("--n-workers", "-2"), ("--val-split", "1.5"),
    ("--image-size", "0"), ("--device", "tpu"),
])
def test_option_values_that_cannot_run(
        tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str,
        value: str) -> None:
    fails(capsys, convert_args(tiny_model, tmp_path, flag, value), value, flag)
    assert not list(tmp_path.iterdir())


# --- device --------------------------------------------------------------------------------

@pytest.mark.parametrize("flags", [["--gpu"], ["--device", "cuda"], ["--device", "cuda:0"]])
def test_cuda_asked_for_without_cuda(tiny_model: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch, flags: list[str]) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    fails(capsys, convert_args(tiny_model, tmp_path, *flags), "no CUDA", "--device cpu")


def test_cuda_out_of_memory_suggests_a_batch_size(
        tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    def out_of_memory(*args: Any, **kwargs: Any) -> None:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(Engine, "run_batch", out_of_memory)
    err = fails(capsys, convert_args(tiny_model, tmp_path), "out of memory", "--batch-size")
    assert "16" in err.split("fix:")[1]  # half the batch size
    (log,) = tmp_path.glob("*/events.jsonl")
    assert read_events(log)[-1].type == "failed"


# --- storage -------------------------------------------------------------------------------

def test_unwritable_job_dir(tiny_model: Path, tmp_path: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "afile").write_text("a file, not a folder\n")  # fails for root too
    fails(capsys, convert_args(tiny_model, tmp_path / "afile" / "runs"), "afile",
          "cannot create a run folder", "--job-dir")


class _FullDisk:
    """A log file whose disk fills up at the first `batch_done`: every later write fails."""

    def __init__(self, file: Any) -> None:
        self._file = file
        self.full = False

    def write(self, text: str) -> int:
        self.full = self.full or '"type":"batch_done"' in text
        if self.full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return int(self._file.write(text))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)


def test_full_disk_while_writing_events(tiny_model: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    def open_full(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        file = open(path, mode, *args, **kwargs)  # noqa: SIM115
        return _FullDisk(file) if "a" in mode else file

    monkeypatch.setattr(bsnn.runlog, "open", open_full, raising=False)
    fails(capsys, convert_args(tiny_model, tmp_path), "events.jsonl", "No space left",
          "free disk space")
    monkeypatch.undo()
    (log,) = tmp_path.glob("*/events.jsonl")
    kinds = [e.type for e in read_events(log)]
    assert kinds[0] == "started" and "thresholds" in kinds  # what came before is kept


# --- conversion ----------------------------------------------------------------------------

def _maxpool_net() -> nn.Module:
    net = nn.Module()
    net.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
    net.classifier = nn.Sequential(nn.Flatten(), nn.Linear(4 * 4 * 4, 10))
    net.forward = lambda x: net.classifier(net.features(x))  # type: ignore[method-assign]
    return net


def test_unsupported_layer_is_named_with_its_position() -> None:
    images = torch.randn(8, 1, 8, 8)
    with pytest.raises(ConversionError) as info:
        convert(_maxpool_net(), lambda: [images])
    assert "features.2" in info.value.message and "MaxPool2d" in info.value.message
    assert "AvgPool2d" in info.value.fix


def test_unsupported_layer_through_the_cli(tiny_model: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    meta = ModelMeta("custom", "digits", 10, (1, 8, 8))
    # where the run loop looks it up: bsnn.pipeline.sources imports load_model by name
    monkeypatch.setattr(bsnn.pipeline.sources, "load_model", lambda *a, **k: (_maxpool_net(), meta))
    fails(capsys, convert_args(tiny_model, tmp_path), "unsupported layer features.2",
          "MaxPool2d", "AvgPool2d")


# --- no traceback, in a real process -------------------------------------------------------

def test_bad_input_in_a_real_process_has_no_traceback(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bsnn", *convert_args(tmp_path / "nope.pt", tmp_path)],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "\nfix: " in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


# --- the Python API: data that cannot fit the network (before a run starts) -----------------

@pytest.fixture(scope="module")
def tiny_snn(tiny_model: Path) -> Any:
    import bsnn

    return bsnn.convert(tiny_model, torch.rand(32, 1, 8, 8), norm=16, device="cpu")


@pytest.mark.parametrize(("images", "labels", "words"), [
    (torch.rand(3, 3, 32, 32), torch.zeros(3), "evaluation images are 3x32x32, the network "
     "takes 1x8x8"),
    (torch.rand(3, 8, 8), torch.zeros(3), "images.unsqueeze(1)"),
    (torch.rand(3, 1, 8, 8), torch.zeros(2), "2 labels for 3 images"),
])
def test_simulate_refuses_data_that_does_not_fit(tiny_snn: Any, tmp_path: Path,
                                                 images: torch.Tensor, labels: torch.Tensor,
                                                 words: str) -> None:
    import bsnn
    from bsnn.errors import DataError

    with pytest.raises(DataError) as err:
        bsnn.simulate(tiny_snn, (images, labels), time=4, job_dir=tmp_path / "job")
    assert words in str(err.value) and err.value.fix
    assert "--" not in str(err.value)  # Python terms, not flags
    assert not (tmp_path / "job").exists()  # refused before the run started


def test_convert_refuses_calibration_images_that_do_not_fit(tiny_model: Path) -> None:
    import bsnn
    from bsnn.errors import DataError

    with pytest.raises(DataError, match="calibration images are 3x32x32, the network takes "
                       "1x8x8"):
        bsnn.convert(tiny_model, torch.rand(8, 3, 32, 32), norm=8, device="cpu")
    plain = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 10))
    with pytest.raises(DataError, match="cannot take calibration images of 3x32x32"):
        bsnn.convert(plain, torch.rand(8, 3, 32, 32), norm=8, device="cpu")


@pytest.mark.parametrize("with_tqdm", [True, False])
def test_progress_shows_the_run_beside_on_event(tiny_snn: Any, with_tqdm: bool,
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    import bsnn

    if not with_tqdm:
        monkeypatch.setitem(sys.modules, "tqdm.auto", None)  # import fails: plain lines
    seen: list[str] = []
    data = (torch.rand(24, 1, 8, 8), torch.zeros(24))
    bsnn.simulate(tiny_snn, data, time=4, batch_size=8, progress=True,
                  on_event=lambda e: seen.append(e.type))
    err = capsys.readouterr().err
    assert seen[0] == "started" and seen[-1] == "finished"  # the caller's sink still gets all
    assert "simulate: 24 images x 4 steps" in err and "finished: 24 images" in err
    assert ("img" in err) == with_tqdm  # tqdm's bar, or the plain batch lines
    assert (": 24 of 24 images (SNN" in err) != with_tqdm
