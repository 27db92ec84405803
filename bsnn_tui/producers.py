"""What fills a RunFeed: the engine itself, or a run log another process is writing.

Both run in worker threads. torch is imported here on first use, never at app start-up.

Run modes: `in-process` runs the engine in a thread of the dashboard (quitting cancels it);
`detached` starts it as a process of its own (bsnn.detach) and follows its events.jsonl, so it
outlives the terminal and any viewer; `auto` is detached on CUDA, in-process otherwise.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from bsnn.config import RunConfig
from bsnn.events import Started
from bsnn.runlog import follow
from bsnn.summary import Summary
from bsnn_tui.feed import RunFeed

RUN_MODES = ("auto", "in-process", "detached")

# Every run of this process goes to this one thread. torch's OpenMP keeps a thread team per
# calling thread; once a second team exists (the thread of an earlier run, idle in Textual's
# worker pool), every small parallel region waits on futexes: runs after the first were
# 2.5x slower on a 2-core CPU. Threads start lazily, on the first run.
_ENGINE_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bsnn-engine")


def run_engine(config: RunConfig, feed: RunFeed, cancel: threading.Event) -> Summary:
    """Run `config` on the engine thread and wait for it; every event goes to the feed (a sink
    of the runner), `cancel` and the run folder's cancel marker are read once per batch."""
    return _ENGINE_THREAD.submit(_run, config, feed, cancel).result()


def _run(config: RunConfig, feed: RunFeed, cancel: threading.Event) -> Summary:
    from bsnn.pipeline.runner import run

    return run(config, emit=feed.append, cancel=cancel.is_set)


def follow_log(run_dir: Path, feed: RunFeed, stop: Callable[[], bool]) -> None:
    """Tail `run_dir/events.jsonl` into the feed until the run ends or `stop()`."""
    for event in follow(run_dir, stop):
        feed.append(event)


def resolve_run_mode(mode: str, device: str, cuda: bool | None = None) -> str:
    """`in-process` or `detached`. `auto` is detached on a CUDA device (a long GPU run should
    outlive the terminal), in-process on the CPU. `cuda`: whether torch sees a CUDA device;
    when None and `device` is auto, torch is asked (imported here: call from a worker)."""
    if mode != "auto":
        return mode
    if device.startswith("cuda"):
        return "detached"
    if device != "auto":
        return "in-process"
    if cuda is None:
        import torch

        cuda = torch.cuda.is_available()
    return "detached" if cuda else "in-process"


def run_detached(config: RunConfig, feed: RunFeed, cancel: threading.Event,
                 stop: Callable[[], bool]) -> None:
    """Start `config` as an engine process of its own and follow its log into the feed until
    the run ends or its engine dies. `cancel` is passed on to the engine (bsnn.detach's cancel
    file: it stops at its next batch boundary); `stop()` ends only the following, never the run.
    """
    from bsnn.detach import start_detached
    from bsnn.runfolder import RunFolder, new_run_id, run_dir_for

    if stop():  # the dashboard quit before the run started: start nothing
        return
    config = replace(config, run_id=config.run_id or new_run_id())
    feed.detached = True
    feed.run_dir = run_dir_for(Path(config.job_dir).absolute(), str(config.run_id))
    run_dir = start_detached(config, wait_for=None)
    engine = EngineWatch(feed)
    asked = False

    def done() -> bool:
        nonlocal asked
        if cancel.is_set() and not asked:
            RunFolder(run_dir).request_cancel()
            asked = True
        return stop() or engine.gone()

    for event in follow(run_dir, done):
        feed.append(event)


class EngineWatch:
    """Whether the detached engine that writes a feed's log has died (without a last word)."""

    def __init__(self, feed: RunFeed) -> None:
        self.feed = feed
        self.started: Started | None = None
        self.dead_checks = 0

    def gone(self) -> bool:
        """True once the engine was found dead twice with a read of the log in between, so its
        last lines, written just before it died, are not lost."""
        from bsnn.summary import pid_alive

        if self.started is None:
            self.started = next((e for e in self.feed.events() if isinstance(e, Started)), None)
        if self.started is None or pid_alive(self.started.pid, self.started.host):
            return False
        self.dead_checks += 1
        return self.dead_checks > 1
