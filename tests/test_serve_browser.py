"""`bsnn-tui --serve` in a real browser: headless Chromium opens the page, a run is started from
the form with the keyboard, and its accuracy is read off the page when it has finished.

Chromium is driven over its DevTools protocol with aiohttp (textual-serve's own dependency): no
browser download, no driver binary. The page is textual-serve's xterm.js terminal, drawn on a
canvas, so the text is read from the terminal's buffer: a hook installed before the page's own
script records the Terminal object when textual.js creates it.

Skips, saying why, when Chromium (Debian's package: /usr/bin/chromium) or textual-serve is
absent. BSNN_SERVE_SCREENSHOT=PATH also saves the finished page as a PNG (docs/ keeps one).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine: "
                       "apt-get install chromium (Debian's package; .ci/run installs it)"),
    pytest.mark.skipif(find_spec("textual_serve") is None,
                       reason="textual-serve is not installed: pip install -e '.[serve]'"),
]
ROOT = Path(__file__).resolve().parents[1]
# Runs before textual.js: the first object given a `terminal` property (its xterm.js Terminal,
# `this.terminal = new Terminal(...)`) is kept as window.__bsnnTerminal.
HOOK = """
Object.defineProperty(Object.prototype, "terminal", {
  configurable: true,
  set(value) {
    window.__bsnnTerminal = value;
    Object.defineProperty(this, "terminal", {value, writable: true, enumerable: true,
                                             configurable: true});
  },
});
"""
SCREEN_TEXT = """(() => {
  const t = window.__bsnnTerminal;
  if (!t) return "";
  const b = t.buffer.active, rows = [];
  for (let i = 0; i < b.length; i++) rows.push(b.getLine(i).translateToString(true));
  return rows.join("\\n");
})()"""
# key: (name, code, text, modifiers); ctrl+s (modifier 2) starts a run, ctrl+s's text is \x13
KEYS = {"escape": ("Escape", 27, "", 0), "ctrl+s": ("s", 83, "\x13", 2)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"bsnn-tui --serve exited: {server.stderr.read().decode()}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError(f"nothing listens on port {port} after {timeout} s")


def stop(process: subprocess.Popen[Any]) -> None:
    """End a process we started (textual-serve waits on its app sessions: kill after 10 s)."""
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`bsnn-tui --serve` with a small run on the form: its URL (with the token the server
    wants, from $BSNN_TUI_TOKEN) and its job dir."""
    port, job_dir, token = free_port(), tmp_path / "runs", "browser-test-token"
    server = subprocess.Popen(
        [sys.executable, "-m", "bsnn_tui", "--serve", "--port", str(port), "--job-dir",
         str(job_dir), "--time", "8", "--eval_size", "64", "--batch-size", "32", "--norm", "64",
         "--run-mode", "in-process"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env={**os.environ, "BSNN_TUI_TOKEN": token})
    try:
        wait_for_port(port, 180, server)
        yield f"http://127.0.0.1:{port}/?token={token}", job_dir
    finally:
        stop(server)


@pytest.fixture
def chromium(tmp_path: Path) -> Iterator[int]:
    """Headless Chromium with a fresh profile; its DevTools port."""
    profile = tmp_path / "profile"
    browser = subprocess.Popen(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--remote-debugging-port=0", f"--user-data-dir={profile}",
         "--window-size=1280,800", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        active = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (active.is_file() and active.read_text().strip()):
            if time.monotonic() > deadline or browser.poll() is not None:
                raise AssertionError("Chromium did not open its DevTools port")
            time.sleep(0.1)
        yield int(active.read_text().split()[0])
    finally:
        stop(browser)


class Page:
    """One browser tab over the DevTools protocol: commands by id, answers awaited."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.next_id = 0

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        await self.ws.send_json({"id": self.next_id, "method": method, "params": params})
        async for message in self.ws:
            answer = json.loads(message.data)
            if answer.get("id") == self.next_id:
                if "error" in answer:
                    raise AssertionError(f"{method}: {answer['error']}")
                return answer.get("result", {})
        raise AssertionError("the browser closed the connection")

    async def text(self) -> str:
        result = await self.send("Runtime.evaluate", expression=SCREEN_TEXT, returnByValue=True)
        return str(result["result"].get("value") or "")

    async def press(self, key: str) -> None:
        name, code, text, modifiers = KEYS[key]
        for kind in ("keyDown", "keyUp"):
            await self.send("Input.dispatchKeyEvent", type=kind, key=name, code=f"Key{name.upper()}"
                            if len(name) == 1 else name, modifiers=modifiers,
                            windowsVirtualKeyCode=code, text=text if kind == "keyDown" else "")

    async def wait_text(self, pattern: str, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, await self.text())
            if found:
                return found
            await asyncio.sleep(0.5)
        raise AssertionError(f"the page never showed {pattern!r}; it shows:\n"
                             f"{await self.text()}")


async def open_page(session: Any, devtools: int, url: str) -> AsyncIterator[Page]:
    async with session.get(f"http://127.0.0.1:{devtools}/json/list") as response:
        target = next(t for t in await response.json() if t["type"] == "page")
    async with session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
        page = Page(ws)
        await page.send("Page.enable")
        await page.send("Page.addScriptToEvaluateOnNewDocument", source=HOOK)
        await page.send("Page.navigate", url=url)
        yield page


@pytest.mark.timeout(600)
def test_a_run_started_in_the_browser_shows_its_accuracy(
        served: tuple[str, Path], chromium: int, tmp_path: Path) -> None:
    import aiohttp

    url, job_dir = served

    async def drive() -> tuple[float, bytes]:
        async with aiohttp.ClientSession() as session:
            async for page in open_page(session, chromium, url):
                await page.wait_text(r"Start", timeout=90)  # the form is on the page
                await page.send("Runtime.evaluate", expression=
                                "document.querySelector('.xterm-helper-textarea').focus()")
                await page.press("escape")
                # apart: ESC then a key in one read of the terminal's input is alt+key
                await asyncio.sleep(1)
                await page.press("ctrl+s")
                found = await page.wait_text(r"FINISHED[\s\S]*T: (\d+\.\d) %", timeout=180)
                await asyncio.sleep(1)  # the last redraw reaches the canvas
                shot = await page.send("Page.captureScreenshot", format="png")
                return float(found.group(1)), base64.b64decode(shot["data"])
        raise AssertionError("no page")

    shown, png = asyncio.run(drive())
    (tmp_path / "serve.png").write_bytes(png)
    if os.environ.get("BSNN_SERVE_SCREENSHOT"):
        Path(os.environ["BSNN_SERVE_SCREENSHOT"]).write_bytes(png)
    summaries = list(job_dir.glob("*/summary.json"))
    assert len(summaries) == 1, f"one run in {job_dir}, found {summaries}"
    summary = json.loads(summaries[0].read_text())
    assert summary["status"] == "finished" and summary["images"] == 64
    assert shown == pytest.approx(100 * summary["final_accuracy"], abs=0.05)
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
