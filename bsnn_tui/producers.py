"""What fills a RunFeed: the engine itself, or a run log another process is writing.

Both run in worker threads. torch is imported here on first use, never at app start-up.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bsnn.config import RunConfig
from bsnn.events import follow
from bsnn_tui.feed import RunFeed

# Every run of this process goes to this one thread. torch's OpenMP keeps a thread team per
# calling thread; once a second team exists (the thread of an earlier run, idle in Textual's
# worker pool), every small parallel region waits on futexes: runs after the first were
# 2.5x slower on a 2-core CPU. Threads start lazily, on the first run.
_ENGINE_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bsnn-engine")


def run_engine(config: RunConfig, feed: RunFeed, cancel: threading.Event) -> dict[str, Any]:
    """Run `config` on the engine thread and wait for it; every event goes to the feed,
    `cancel` is read once per batch."""
    return _ENGINE_THREAD.submit(_run, config, feed, cancel).result()


def _run(config: RunConfig, feed: RunFeed, cancel: threading.Event) -> dict[str, Any]:
    from bsnn.run import run

    return run(config, emit=feed.append, cancel=cancel.is_set)


def follow_log(run_dir: Path, feed: RunFeed, stop: Callable[[], bool]) -> None:
    """Tail `run_dir/events.jsonl` into the feed until the run ends or `stop()`."""
    for event in follow(run_dir, stop):
        feed.append(event)
