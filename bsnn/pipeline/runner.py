"""THE run: load -> thresholds -> SNN calibration -> simulate -> end, as a stream of events.

Every face drives this one state machine: `bsnn convert` (foreground and detached), the dashboard
(in-thread and detached), `bsnn.simulate` (with or without a job dir), `bsnn sweep`'s cells. It
alone owns the error policy: a cancel (from the caller's callback or the run folder's marker,
checked between batches and during calibration), out-of-memory (CUDA and host), a BsnnError or
anything unexpected each end the run with one terminal event (`cancelled` / `failed`, with a
saved traceback where the error was not the user's), the log closed and the exports written;
an export that fails while failing is recorded, never raised over the first error.
"""

from __future__ import annotations

import os
import socket
import traceback
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import torch

from bsnn.checkpoint import resolve_model_path, versions
from bsnn.config import RunConfig
from bsnn.conversion import Conversion
from bsnn.data import make_loader
from bsnn.devices import loader_workers
from bsnn.distributed import World, backend_for, init_from_env, shutdown, world
from bsnn.errors import BsnnError, DeviceError
from bsnn.events import (
    BatchDone,
    Cancelled,
    Emit,
    Event,
    Failed,
    Finished,
    Phase,
    Progress,
    Started,
    keep,
)
from bsnn.jobdir import append_results_line, results_path
from bsnn.pipeline.inputs import Loaded
from bsnn.pipeline.simulation import CancelRequested, Simulation
from bsnn.pipeline.stages import (
    calibrate_thresholds,
    conversion_events,
    sim_options,
    snn_calibrated,
)
from bsnn.records import plural
from bsnn.runfolder import RunFolder, new_run_id
from bsnn.summary import Summary, summarize


class Source(Protocol):
    """Where a run's model and data come from (bsnn.pipeline.sources)."""

    def device(self, run: Runner) -> torch.device: ...

    def load(self, run: Runner) -> Loaded: ...


class Runner:
    """One run's state. `run()` is the whole run; the stages are its methods."""

    def __init__(self, config: RunConfig, source: Source, emit: Emit | None = None,
                 cancel: Callable[[], bool] | None = None) -> None:
        self.config, self.source, self.emit = config, source, emit
        self.cancel = cancel or (lambda: False)
        self.world: World = world()
        self.events: list[Event] = []
        self.images, self.sim_seconds, self.workers, self.sent = 0, 0.0, 0, 0
        self.device = torch.device("cpu")
        self.dist_created = False  # whether this run joined torchrun's group (and leaves it)
        writes = config.job_dir is not None and self.world.main  # rank 0 alone writes files
        self.folder = RunFolder.create(config.job_dir, config.run_id) if writes else None
        self.run_id = self.folder.run_id if self.folder else config.run_id or new_run_id()

    # -- the stream ----------------------------------------------------------------------------

    def send(self, event: Event) -> None:
        """Number, keep, log and emit `event`; a log that cannot be written raises
        RunStorageError after the event is emitted, so the consumers still see it."""
        event.seq, self.sent = self.sent, self.sent + 1
        keep(self.events, event)
        try:
            if self.folder is not None:
                self.folder.append(event)
        finally:
            if self.emit is not None and self.world.main:
                self.emit(event)

    def cancelled(self) -> bool:
        """The caller's cancel, or a cancel marker in the run folder (`bsnn cancel`)."""
        return self.cancel() or (self.folder is not None and self.folder.cancel_requested())

    def check_cancel(self) -> None:
        # Under torchrun a cancel is agreed at the simulation's batch boundaries (a rank that
        # stopped alone would leave the others waiting in a collective).
        if not self.world.distributed and self.cancelled():
            raise CancelRequested

    def loader(self, dataset: Any) -> Any:
        return make_loader(dataset, self.config.batch_size, n_workers=self.workers,
                           pin_memory=self.device.type == "cuda", seed=self.config.seed)

    def batches(self, images: Any) -> Iterator[torch.Tensor]:
        """Calibration batches on the device, checking for a cancel before each."""
        for x, _ in self.loader(images):
            self.check_cancel()
            yield x.to(self.device, non_blocking=True)

    # -- the stages ----------------------------------------------------------------------------

    def execute(self) -> None:
        c = self.config
        torch.manual_seed(c.seed)
        self.start()
        loaded = self.source.load(self)
        for event in loaded.warnings:
            self.send(event)
        if loaded.dataset is not None:
            self.workers = loader_workers(c.n_workers, loaded.dataset, self.device,
                                          self.world.size)
        conversion = self.thresholds(loaded)
        if c.snn_calibration != "none" and loaded.snn_images is not None:
            conversion = self.snn_calibration(conversion, loaded.snn_images)
        what = (f"{plural(len(loaded.eval_set), 'image')} x {plural(c.time, 'step')} on "
                f"{self.device}")

        def starting(arithmetic: list[str] | None) -> None:  # the record of what ran
            names = [layer.name for layer in conversion.network.layers]
            per_layer = "" if arithmetic is None else "; arithmetic " + ", ".join(
                f"{n} {a}" for n, a in zip(names, arithmetic, strict=True))
            self.send(Phase(name="simulate", message=what + per_layer))

        self.sim_seconds = Simulation(
            conversion, sim_options(c), c.backend, self.world, self.device, self._count,
            self.cancelled, self.loader, c.batch_size, starting=starting).run(loaded.eval_set)

    def start(self) -> None:
        self.device = self.source.device(self)
        group = ({"world_size": self.world.size, "backend": backend_for(self.device)}
                 if self.world.distributed else None)
        self.send(Started(run_id=self.run_id, run_dir=str(self.folder.path if self.folder
                                                           else ""),
                          config=self.config.to_dict(), device=str(self.device),
                          versions=versions(), pid=os.getpid(), host=socket.gethostname(),
                          distributed=group))
        self.dist_created = init_from_env(self.device)

    def thresholds(self, loaded: Loaded) -> Conversion:
        """Thresholds from a percentile of each layer's ANN activations over the calibration
        images, or those `bsnn.convert` set already."""
        c = self.config
        if loaded.conversion is not None:
            self.send(Phase(name="threshold_calibration", message="thresholds set by "
                            "bsnn.convert()"))
            conversion = loaded.conversion
        else:
            images = len(loaded.calibration)
            self.send(Phase(name="threshold_calibration",
                            message=f"{c.percentile}th percentile over {images} training images"))

            def progress(passes: int, done: int, total: int) -> None:
                self.send(Progress(phase="threshold_calibration", done=done, total=total,
                                   message=f"pass {passes} over {images} images: {done} of "
                                   f"{total} layers' percentiles exact"))

            conversion = calibrate_thresholds(loaded.model, lambda: self.batches(
                loaded.calibration), c, progress)
        for event in conversion_events(conversion, c.percentile, c.threshold_granularity):
            self.send(event)
        return conversion

    def snn_calibration(self, conversion: Conversion, images: Any) -> Conversion:
        """Li et al.'s SNN calibration on its own training images (on a copy of the layers)."""
        c = self.config
        self.send(Phase(name="snn_calibration", message=f"{c.snn_calibration} calibration on "
                        f"{len(images)} training images"))
        calibrated, event = snn_calibrated(conversion, lambda: self.batches(images),
                                           len(images), sim_options(c), c.snn_calibration)
        self.send(event)
        return calibrated

    def _count(self, event: BatchDone) -> None:
        self.images = event.images
        self.send(event)

    # -- the end -------------------------------------------------------------------------------

    def run(self) -> Summary:
        """The run, whatever happens: the summary of a finished or cancelled run; a failed one
        raises its BsnnError (out-of-memory becomes a DeviceError) or the unexpected error,
        after its `failed` event."""
        try:
            self.execute()
            finished, results_line = self.finish()
        except CancelRequested:
            self.end(Cancelled(images=self.images))
        except KeyboardInterrupt:  # a second Ctrl-C: stop at once, but say so
            self.end(Cancelled(images=self.images))
            raise
        except (torch.cuda.OutOfMemoryError, MemoryError) as err:
            where = "CUDA" if isinstance(err, torch.cuda.OutOfMemoryError) else "the host"
            size = self.config.batch_size
            error = DeviceError(f"{where} ran out of memory at batch size {size}",
                                f"pass a smaller --batch-size (batch_size=), e.g. "
                                f"{max(1, size // 2)}")
            self.fail(error, traceback.format_exc())
            raise error from None
        except BsnnError as err:
            self.fail(err)
            raise
        except Exception as err:
            self.fail(err, traceback.format_exc())
            raise
        else:
            self.end(finished, results_line)
        return summarize(self.events)

    def finish(self) -> tuple[Finished, Callable[[], object] | None]:
        """The run's last event, and the original's results line to write before it."""
        accuracy = summarize(self.events).final_accuracy
        c = self.config
        finished = Finished(images=self.images, wall_time_s=self.sim_seconds,
                            final_accuracy=accuracy)
        if accuracy is None or self.folder is None:
            return finished, None
        path = results_path(c.job_dir, c.results_file)
        values: list[object] = [c.seed, c.time, c.batch_size, self.sim_seconds, 100 * accuracy]
        return finished, lambda: append_results_line(path, values)

    def fail(self, error: BaseException, trace: str | None = None) -> None:
        """The `failed` event after the exports; the caller re-raises its own error. An error
        that is not the user's keeps its traceback in the run folder."""
        saved = None
        if trace is not None and self.folder is not None:
            saved = self.folder.save_traceback(trace)
        if isinstance(error, BsnnError):
            message, fix = error.message, error.fix
        else:
            message = str(error) or type(error).__name__
            fix = f"unexpected; the traceback is in {saved}" if saved else "unexpected"
        if saved and isinstance(error, BsnnError):
            fix += f" (traceback: {saved})"
        self.end(Failed(error=type(error).__name__, message=message, fix=fix,
                        images=self.images))

    def end(self, final: Event, before: Callable[[], object] | None = None) -> None:
        """Write the run's files, then send `final`; RunStorageError when a write failed and
        the run, recorded as failed, had not failed already."""
        error = None
        try:
            if self.folder is not None:
                error = self.folder.end(self.events, final, self.send, before)
            else:
                self.send(final)
        finally:
            if self.folder is not None:
                self.folder.close()
            shutdown(self.dist_created)
        if error is not None:
            raise error


def run(config: RunConfig, emit: Emit | None = None,
        cancel: Callable[[], bool] | None = None) -> Summary:
    """Run `config` (load it all from its names); return the summary. Raises BsnnError (after
    emitting `failed`) on bad input, and RunStorageError when a file of the run (its log,
    exports or results line) cannot be written; returns normally when cancelled."""
    from bsnn.pipeline.sources import ConfigSource

    config.validate()
    resolve_model_path(config.model)  # a misspelt model fails here, before a run folder exists
    return Runner(config, ConfigSource(), emit, cancel).run()
