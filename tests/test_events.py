"""The typed event stream: every type written and read back as itself, described in words, and
kept small by consumers; run folders, ids and the cancel marker of bsnn.runfolder."""

from __future__ import annotations

import json
import threading
from dataclasses import MISSING, fields
from pathlib import Path

import pytest

from bsnn.errors import RunStorageError
from bsnn.events import (
    EVENT_TYPES,
    BatchDone,
    Cancelled,
    Event,
    Failed,
    Finished,
    Phase,
    Progress,
    Resolved,
    RunWarning,
    SnnCalibration,
    Started,
    Thresholds,
    describe,
    event_from_dict,
    keep,
)
from bsnn.jobdir import list_runs
from bsnn.runfolder import CANCEL_FILE, RunFolder
from bsnn.runlog import EVENTS_FILE, EventLog, follow, read_events
from bsnn.summary import summarize


def batch(images: int, batch_index: int = 0) -> BatchDone:
    return BatchDone(batch=batch_index, images=images, images_total=100,
                     correct_per_step=[images // 2, images], ann_correct=images,
                     spikes={"conv1": [1.0, 2.0]}, synops={"conv1": [9.0, 18.0]},
                     ann_activation={"conv1": 3.0}, elapsed_s=0.5)


ONE_OF_EACH: list[Event] = [
    Started(run_id="r1", run_dir="/tmp/r1", config={"time": 2}, device="cpu", pid=1, host="h"),
    Phase(name="load_model", message="loading bundled:digits-fp"),
    Resolved(model="bundled:digits-fp", checkpoint="/x/digits-fp.pt", checkpoint_sha256="00ff",
             arch="vgg6ab", width=1.0, binary=False, num_classes=10, dataset="digits",
             data_path="sklearn:load_digits", input_shape=[1, 8, 8], mean=[0.3], std=[0.4],
             device="cpu", origin={"arch": "from checkpoint"}),
    Progress(phase="threshold_calibration", done=2, total=5, message="pass 1 over 64 images"),
    RunWarning(message="eval size 999 is larger than the data set"),
    Thresholds(layers=[{"name": "conv1", "neurons": 4}], percentile=99.7, granularity="layer"),
    SnnCalibration(mode="bias", images=8, error_before={"conv1": 0.25}),
    batch(10),
    Finished(images=10, wall_time_s=1.5, final_accuracy=1.0),
    Failed(error="DataError", message="no data", fix="pass --data"),
    Cancelled(images=10),
]


def test_every_event_type_has_a_fixture_here() -> None:
    assert {e.type for e in ONE_OF_EACH} == set(EVENT_TYPES)


@pytest.mark.parametrize("event", ONE_OF_EACH, ids=lambda e: e.type)
def test_each_event_type_reads_back_as_itself(event: Event, tmp_path: Path) -> None:
    log = EventLog(tmp_path / EVENTS_FILE)
    log(event)
    log.close()
    (back,) = read_events(tmp_path)
    assert type(back) is type(event)
    assert back == event and back.seq == 0
    line = json.loads((tmp_path / EVENTS_FILE).read_text())
    assert line["type"] == event.type and set(line) == {"type", *(f.name for f in fields(event))}


@pytest.mark.parametrize("event", ONE_OF_EACH, ids=lambda e: e.type)
def test_each_event_type_is_described_in_words(event: Event) -> None:
    text = describe(event)
    assert text and text != event.type  # the fallback would mean a type without words


def test_describe_says_what_the_user_needs() -> None:
    assert describe(ONE_OF_EACH[0]) == "started run r1 on cpu in /tmp/r1"
    assert describe(Finished(images=10, wall_time_s=1.0, final_accuracy=0.9712)) \
        == "finished: 10 images, accuracy at T 97.12 %"
    assert describe(Failed(error="DataError", message="no data", fix="pass --data")) \
        == "failed: no data — pass --data"
    assert describe(Progress(phase="threshold_calibration", done=2, total=5)) \
        == "threshold_calibration: 2 of 5"
    assert describe(ONE_OF_EACH[2]) == (
        "resolved: vgg6ab (from checkpoint) on digits from sklearn:load_digits, images 1x8x8, "
        "mean [0.3] std [0.4], device cpu, sha256 00ff")


@pytest.mark.parametrize("cls", list(EVENT_TYPES.values()), ids=lambda c: c.type)
def test_a_line_missing_a_required_field_is_skipped(cls: type[Event]) -> None:
    required = [f.name for f in fields(cls)
                if f.default is MISSING and f.default_factory is MISSING]
    if not required:
        pytest.skip(f"{cls.type} has no required field")
    complete = next(e for e in ONE_OF_EACH if type(e) is cls).to_dict()
    assert event_from_dict(complete) is not None
    assert event_from_dict({k: v for k, v in complete.items() if k != required[0]}) is None


def test_unknown_types_and_foreign_lines_are_skipped(tmp_path: Path) -> None:
    log = tmp_path / EVENTS_FILE
    known = json.dumps(Cancelled(images=3).to_dict())
    log.write_text("\n".join(['{"type": "from_the_future", "x": 1}', "[1, 2]", "not json",
                              '{"no_type": 1}', known]) + "\n")
    assert read_events(tmp_path) == [Cancelled(**{k: v for k, v in json.loads(known).items()
                                                 if k != "type"})]


def test_extra_fields_of_a_newer_version_are_ignored() -> None:
    data = {**Cancelled(images=3).to_dict(), "reason": "new field"}
    event = event_from_dict(data)
    assert isinstance(event, Cancelled) and event.images == 3


def test_keep_replaces_cumulative_batches_only() -> None:
    events: list[Event] = []
    for e in (ONE_OF_EACH[0], batch(10, 0), batch(20, 1), RunWarning(message="w"),
              batch(30, 2), batch(40, 3)):
        keep(events, e)
    assert [type(e) for e in events] == [Started, BatchDone, RunWarning, BatchDone]
    assert events[1].images == 20 and events[3].images == 40  # type: ignore[attr-defined]
    everything = [ONE_OF_EACH[0], batch(10, 0), batch(20, 1), RunWarning(message="w"),
                  batch(30, 2), batch(40, 3)]
    assert summarize(events) == summarize(everything)  # the same figures from the kept list


def test_follow_yields_typed_events_until_the_terminal_one(tmp_path: Path) -> None:
    log = EventLog(tmp_path / EVENTS_FILE)
    for event in (Phase(name="simulate"), batch(10), Finished(images=10, wall_time_s=1.0,
                                                               final_accuracy=1.0), batch(99)):
        log(event)
    log.close()
    seen = list(follow(tmp_path, poll_s=0.01))
    assert [type(e) for e in seen] == [Phase, BatchDone, Finished]


def test_run_dirs_are_unique_and_a_given_id_is_never_reused(tmp_path: Path) -> None:
    made: list[Path] = []
    threads = [threading.Thread(target=lambda: made.append(RunFolder.create(tmp_path).path))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({p.name for p in made}) == 8 and all(p.is_dir() for p in made)
    RunFolder.create(tmp_path, "fixed")
    with pytest.raises(RunStorageError, match="run fixed already exists"):
        RunFolder.create(tmp_path, "fixed")


def test_cancel_marker_and_status(tmp_path: Path) -> None:
    run_dir = tmp_path / "r1"
    with pytest.raises(RunStorageError, match="is not a run folder"):
        RunFolder.open(run_dir).status()
    log = EventLog(run_dir / EVENTS_FILE)
    log(ONE_OF_EACH[0])
    # pid 1 on host "h": not this machine's writer
    assert RunFolder.open(run_dir).status() == "interrupted"
    assert not RunFolder(run_dir).cancel_requested()
    RunFolder(run_dir).request_cancel()
    assert RunFolder(run_dir).cancel_requested()
    assert sorted(p.name for p in run_dir.iterdir()) == [CANCEL_FILE, EVENTS_FILE]
    log(Cancelled(images=0))
    log.close()
    assert RunFolder.open(run_dir).status() == "cancelled"
    runs = list_runs(tmp_path)
    assert [(r.run_id, r.summary.status) for r in runs] == [("r1", "cancelled")]


def _ended_run(run_dir: Path) -> Path:
    """A run folder as `bsnn convert` leaves it: its summary.json (written for the terminal
    event, just before that event is logged), then the event."""
    events = [*ONE_OF_EACH[:-3], Finished(images=8, wall_time_s=1.0, final_accuracy=1.0)]
    events[0] = Started(run_id=run_dir.name, run_dir=str(run_dir), config={"time": 2},
                        device="cpu", pid=1, host="h")
    log = EventLog(run_dir / EVENTS_FILE)
    for event in events[:-1]:
        log(event)
    RunFolder(run_dir).write_exports(read_events(run_dir) + events[-1:])
    log(events[-1])
    log.close()
    return run_dir


def test_listing_reads_the_summary_an_ended_run_wrote_and_the_log_otherwise(
        tmp_path: Path) -> None:
    run_dir = _ended_run(tmp_path / "r1")
    (listed,) = list_runs(tmp_path)
    assert listed.summary.status == "finished" and listed.run_dir == run_dir
    fresh = summarize(read_events(run_dir))
    assert listed.summary == fresh
    assert json.dumps(listed.summary.to_dict(), sort_keys=True) == json.dumps(
        fresh.to_dict(), sort_keys=True)

    saved = json.loads((run_dir / "summary.json").read_text())
    (run_dir / "summary.json").write_text(json.dumps(saved | {"images": 12345}))
    assert list_runs(tmp_path)[0].summary.images == 12345  # read from summary.json, not the log

    stale = {
        "a summary of another status": saved | {"status": "cancelled", "images": 12345},
        "an older bsnn's summary": {k: v for k, v in saved.items() if k != "energy"},
        "a torn file": '{"status": "finished", "imag',
    }
    for what, text in stale.items():
        (run_dir / "summary.json").write_text(text if isinstance(text, str)
                                              else json.dumps(text))
        assert list_runs(tmp_path)[0].summary.images == fresh.images, what

    (run_dir / "summary.json").write_text(json.dumps(saved | {"images": 12345}))
    with open(run_dir / EVENTS_FILE, "a") as f:  # the log goes on past the summary's end
        f.write(json.dumps(batch(9).to_dict()) + "\n")
    assert list_runs(tmp_path)[0].summary.images == 9
    (run_dir / EVENTS_FILE).write_text("")
    assert list_runs(tmp_path)[0].summary.status == "interrupted"


def test_summary_says_whether_the_weights_are_binary() -> None:
    from bsnn.exports import summary_markdown
    from bsnn.records import weights_in_words
    from bsnn.summary import Summary

    def summary(binary: list[bool]) -> Summary:
        layers = [{"name": f"l{i}", "neurons": 4, "binary": b} for i, b in enumerate(binary)]
        started = Started(run_id="r", run_dir="/r", config={"binary_weights": "sign"},
                          device="cpu")
        return summarize([started, Thresholds(layers=layers, percentile=99.7,
                                              granularity="layer")])

    fp = summary([False, False, False])
    assert fp["binary_layers"] == 0 and weights_in_words(fp) == "full-precision weights"
    binary = summary([False, True, True, True])  # the output layer (last) never counts
    assert binary["binary_layers"] == 2
    assert weights_in_words(binary) == ("binary weights in 2 of 3 spiking layers "
                                        "(--binary-weights sign)")
    assert "binary weights in 2 of 3" in summary_markdown(binary)
