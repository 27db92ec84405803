"""The bsnn-tui application: screens, keys, and the one background run.

Start-up stays light (no torch; it loads in workers after the first paint), the run goes in a
worker thread that feeds a RunFeed, and screens redraw from that feed a few times a second.
The worker runs the engine itself (in-process) or starts it as a process of its own and follows
its events.jsonl (detached), which is what any other viewer of the run does too.

Keys that change a run are hard to press by mistake: starting takes ctrl+s (or Enter on the form),
and a cancel, or a quit that would stop an in-process run, asks first (screens/confirm.py).
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import ClassVar

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.worker import get_current_worker

from bsnn.config import RunConfig
from bsnn.errors import BsnnError, ConfigError
from bsnn.runlog import EVENTS_FILE
from bsnn.summary import summarize
from bsnn_tui import producers
from bsnn_tui.feed import RunFeed
from bsnn_tui.options import build_parser, serve_command
from bsnn_tui.screens.confirm import ConfirmScreen
from bsnn_tui.screens.help import EXPORTS, HelpScreen
from bsnn_tui.screens.run import RunScreen
from bsnn_tui.screens.runs import RunsScreen
from bsnn_tui.screens.setup import SetupScreen
from bsnn_tui.widgets.accuracy import percent

QUIT_STOPS_RUN = (
    "The run stops if you quit: it runs inside the dashboard (in-process). Its log ends "
    "cancelled and what was done is kept. (Run mode detached keeps a run going after the "
    "dashboard closes.)"
)


class BsnnApp(App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "bsnn"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "start", "Start"),
        Binding("c", "cancel", "Cancel"),
        Binding("r", "runs", "Runs"),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, config: RunConfig | None = None, *, start: bool = False,
                 attach: Path | None = None, run_mode: str = "auto") -> None:
        super().__init__()
        self.setup = SetupScreen(config or RunConfig(), run_mode,
                                 defer_loading=attach is not None)
        self.live: RunFeed | None = None  # the run this app started, if any
        self.left_running: Path | None = None  # a detached run still going when we quit
        self._cancel = threading.Event()
        self._start_at_once = start
        self._attach = attach

    def get_default_screen(self) -> Screen[None]:
        return self.setup

    def on_ready(self) -> None:
        """After the first paint: --attach and --start need the form on screen."""
        if self._attach is not None:
            self.open_run(self._attach)
        elif self._start_at_once:
            self.action_start()

    @property
    def running(self) -> bool:
        return self.live is not None and self.live.active

    # -- actions -------------------------------------------------------------------------------

    def action_start(self) -> None:
        """Start the form's run in the background and show its panels."""
        if self.asking():
            return
        if self.running:
            self.notify("a run is in progress: cancel it (c) or wait", severity="warning")
            return
        try:
            config = self.setup.config()
        except ConfigError as e:
            self.show_setup()
            self.notify(f"{e.message}\n{e.fix}", title="cannot start", severity="error")
            return
        self.live = feed = RunFeed()
        feed.active = True
        self._cancel = threading.Event()
        self._run(config, self.setup.run_mode(), feed, self._cancel)
        self.show_setup()
        self.push_screen(RunScreen(feed))
        self.refresh_bindings()

    @work(thread=True, exclusive=True, exit_on_error=False, group="run")
    def _run(self, config: RunConfig, mode: str, feed: RunFeed, cancel: threading.Event) -> None:
        """The engine in a thread, or a detached engine followed from one (resolving `auto`
        may import torch: it is done here). Whatever it raises is shown, never lets the app
        fall."""
        worker = get_current_worker()
        try:
            if producers.resolve_run_mode(mode, config.device) == "detached":
                producers.run_detached(config, feed, cancel, lambda: worker.is_cancelled)
            else:
                producers.run_engine(config, feed, cancel)
        except Exception as error:
            feed.fail(error)
        finally:
            feed.active = False
            with contextlib.suppress(RuntimeError):  # the app may have closed meanwhile
                self.call_from_thread(self._run_ended, feed)

    def _run_ended(self, feed: RunFeed) -> None:
        """Say how the run ended, wherever the user is looking."""
        self.refresh_bindings()
        summary = summarize(feed.events())
        problem = feed.why_failed(summary)
        if problem is not None:
            self.notify(f"{problem.message}\n{problem.fix}", title="run failed",
                        severity="error", timeout=10)
        elif summary.status == "finished":
            self.notify(f"accuracy at T {percent(summary.final_accuracy, 2)}",
                        title=f"run {summary.run_id} finished")
        else:
            self.notify(f"after {summary.images} images", title=f"run {summary.status}")

    def viewed_run(self) -> RunFeed | None:
        """The run that `c` cancels: the one on screen when it is another process's run still
        going (attached), else the run this app started while it runs."""
        screen = self.screen_stack[-1] if self.screen_stack else None
        if isinstance(screen, RunScreen) and screen.feed is not self.live:
            running = screen.follow is not None and screen.summary.status == "running"
            return screen.feed if running else None
        return self.live if self.running else None

    def asking(self) -> bool:
        """Whether a question is on screen: keys behind it wait for its answer."""
        return isinstance(self.screen, ConfirmScreen)

    def action_cancel(self) -> None:
        """Ask first: `c` is one key, and a cancelled run cannot be resumed."""
        feed = self.viewed_run()
        if feed is None or self.asking():
            return
        name = feed.run_dir.name if feed.run_dir is not None else "the run"
        question = (f"Stop {name}? It stops after the batch in flight; what was done is kept "
                    f"(its log ends cancelled).")
        self.push_screen(ConfirmScreen("cancel the run?", question, "Stop the run",
                                       "Keep it running"),
                         lambda yes: self.cancel_run(feed) if yes else None)

    def cancel_run(self, feed: RunFeed) -> None:
        """In-process, the engine reads the cancel flag; a detached or attached run's engine
        reads its run folder's cancel marker (RunFolder.request_cancel). Either stops at a
        batch boundary and writes `cancelled` and the partial summary."""
        if feed is self.live and not self.running:
            return  # it ended while the question was on screen
        if feed is self.live:
            self._cancel.set()  # the run worker passes it on to a detached engine
        else:
            from bsnn.runfolder import RunFolder

            try:
                RunFolder(feed.run_dir).request_cancel()  # type: ignore[arg-type]
            except BsnnError as e:
                self.notify(f"{e.message}\n{e.fix}", title="cannot cancel", severity="error")
                return
        self.notify("cancelling: the run stops after the batch in flight")

    def action_new_run(self) -> None:
        self.show_setup()

    def action_runs(self) -> None:
        if not isinstance(self.screen, RunsScreen):
            self.push_screen(RunsScreen(Path(self.setup.job_dir())))

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    async def action_quit(self) -> None:
        """A detached run goes on (follow it again with --attach); an in-process run would stop,
        so that is asked first, and a yes cancels it so its log ends `cancelled`, not
        mid-air."""
        if self.asking():
            return
        if self.running and self.live is not None and self.live.detached:
            self.left_running = self.live.run_dir
            self.notify(going_on(self.left_running), title="the run goes on")
        elif self.running:
            self.push_screen(ConfirmScreen("quit?", QUIT_STOPS_RUN, "Stop the run and quit",
                                           "Keep watching"),
                             lambda yes: self.stop_and_exit() if yes else None)
            return
        self.exit()

    def stop_and_exit(self) -> None:
        self._cancel.set()
        self.exit()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Dim the keys that do nothing right now (the Footer shows them greyed out); while a
        question is on screen, the app's keys wait for its answer."""
        if self.asking() and action in ("start", "cancel", "runs", "help", "quit"):
            return False
        if action == "start":
            return not self.running or None
        if action == "cancel":
            return self.viewed_run() is not None or None
        return True

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        """Every key's action is also in the command palette (ctrl+p), by name."""
        yield SystemCommand("Start run", "Start a run with the form's values (ctrl+s)",
                            self.action_start)
        if self.viewed_run() is not None:
            yield SystemCommand("Cancel run", "Stop the run after its current batch (c, asks)",
                                self.action_cancel)
        if isinstance(screen, RunScreen):
            yield SystemCommand("Export", f"Write {EXPORTS} (e)", screen.action_export)
        yield SystemCommand("New run", "Back to the form (n)", self.action_new_run)
        yield SystemCommand("Runs", "The runs in the job dir; overlay their curves (r)",
                            self.action_runs)
        yield SystemCommand("Help", "Keys and what the panels show (?)", self.action_help)
        yield from super().get_system_commands(screen)

    # -- navigation ----------------------------------------------------------------------------

    def show_setup(self) -> None:
        while self.screen is not self.setup:
            self.pop_screen()

    def on_runs_screen_open_run(self, message: RunsScreen.OpenRun) -> None:
        self.open_run(message.run_dir)

    def open_run(self, run_dir: Path) -> None:
        """The panels of a run on disk: ours if it is the live one, else followed from its log."""
        if self.live is not None and self.live.run_dir is not None \
                and self.live.run_dir.resolve() == run_dir.resolve():
            self.push_screen(RunScreen(self.live))
        else:
            self.push_screen(RunScreen(RunFeed(run_dir), follow=run_dir))


def going_on(run_dir: Path | None) -> str:
    """What to tell the user who leaves a detached run running."""
    return (f"the run goes on in the background; follow it again with\n"
            f"  bsnn-tui --attach {run_dir}\nor stop it with bsnn cancel {run_dir}")


def serve(argv: Sequence[str], host: str, port: int, token: str | None) -> int:
    """Serve the same app to a browser, behind a token (bsnn_tui.serve); textual-serve is an
    optional extra, imported here."""
    try:
        from bsnn_tui.serve import serve_app
    except ImportError:
        print("bsnn-tui --serve needs textual-serve: pip install 'bsnn[serve]'", file=sys.stderr)
        return 2
    return serve_app(serve_command(argv), host, port, token)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.serve:
        return serve(argv, args.host, args.port, args.token)
    attach = Path(args.attach) if args.attach else None
    if attach is not None and not (attach / EVENTS_FILE).is_file():
        print(f"error: {attach} holds no events.jsonl\nfix: pass a run folder "
              f"(a folder under the job dir)", file=sys.stderr)
        return 2
    app = BsnnApp(RunConfig.from_args(args), start=args.start, attach=attach,
                  run_mode=args.run_mode)
    app.run()
    if app.left_running is not None:
        print(going_on(app.left_running))
    return 0


if __name__ == "__main__":
    sys.exit(main())
