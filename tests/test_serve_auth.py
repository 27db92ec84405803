"""`bsnn-tui --serve` lets in only who has the token, from this machine's names, on relative URLs.

The real server runs in a subprocess on a free loopback port; urllib (HTTP) and aiohttp (the
WebSocket) talk to it as a browser would, directly and through a local TCP forwarder on another
port (an SSH tunnel's shape). Bad --port/--host values must fail in one line, before "Serving".
Skips when textual-serve is not installed. Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path

import pytest
from test_serve_browser import free_port, stop  # the browser test's server helpers

pytestmark = pytest.mark.skipif(find_spec("textual_serve") is None,
                                reason="textual-serve is not installed: pip install -e '.[serve]'")
ROOT = Path(__file__).resolve().parents[1]
SERVING = re.compile(r"Serving bsnn-tui on http://127\.0\.0\.1:(\d+)/\?token=(\S+)")


@dataclass
class Served:
    """A running `bsnn-tui --serve`: its port and the token it printed."""

    process: subprocess.Popen[str]
    lines: queue.Queue[str] = field(default_factory=queue.Queue)
    port: int = 0
    token: str = ""

    def url(self, path: str = "/", port: int | None = None) -> str:
        return f"http://127.0.0.1:{port or self.port}{path}"

    def wait_serving(self, timeout: float) -> None:
        """Read stdout until the URL line: the port and token from it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.process.poll() is not None:
                    raise AssertionError("bsnn-tui --serve exited before serving") from None
                continue
            found = SERVING.search(line)
            if found:
                self.port, self.token = int(found[1]), found[2]
                return
        raise AssertionError(f"no 'Serving' line after {timeout} s")


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    """Start `python -m bsnn_tui --serve --port N ARGS...` (env added); all stop at the end."""
    started: list[Served] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Served:
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "bsnn_tui", "--serve", "--port", str(port), "--job-dir",
             str(tmp_path / "runs"), *args],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
        served = Served(process)
        started.append(served)
        # drains stdout to the end, so the server never blocks on a full pipe
        threading.Thread(target=lambda: [served.lines.put(line) for line in process.stdout or ()],
                         daemon=True).start()
        served.wait_serving(120)
        assert served.port == port
        return served

    try:
        yield start
    finally:
        for served in started:
            stop(served.process)


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Status, Set-Cookie and body of a GET (403s included)."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return (response.status, response.headers.get("Set-Cookie", ""),
                    response.read().decode())
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Set-Cookie", ""), error.read().decode()


def ws_status(url: str, headers: dict[str, str], first_message: bool = False) -> int:
    """The WebSocket handshake's status (101 when it opened); with first_message, also wait
    (60 s at most) for the dashboard's first output, which proves a session runs behind it."""
    import aiohttp

    async def connect() -> int:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            try:
                async with session.ws_connect(url, headers=headers) as ws:
                    if first_message:
                        message = await ws.receive(timeout=60)
                        assert message.type in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT)
                    return 101
            except aiohttp.WSServerHandshakeError as error:
                return error.status

    return asyncio.run(connect())


def cookie_of(set_cookie: str) -> str:
    """The `name=value` a browser sends back for a Set-Cookie header."""
    return set_cookie.split(";", 1)[0]


@contextmanager
def forwarder(target: int) -> Iterator[int]:
    """A local TCP forwarder 127.0.0.1:M -> 127.0.0.1:target (an SSH tunnel's shape): yields M.
    Every thread ends within a second of the block's end."""
    done = threading.Event()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)

    def pump(source: socket.socket, sink: socket.socket) -> None:
        source.settimeout(0.2)
        with source, sink:
            while not done.is_set():
                try:
                    data = source.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not data:
                    return
                sink.sendall(data)

    def accept() -> None:
        while not done.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            upstream = socket.create_connection(("127.0.0.1", target), timeout=10)
            for ends in ((client, upstream), (upstream, client)):
                threading.Thread(target=pump, args=ends, daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        done.set()
        thread.join(timeout=5)
        listener.close()


# -- HTTP ---------------------------------------------------------------------------------------

@pytest.mark.timeout(300)
def test_every_request_needs_the_token_then_the_cookie_does(
        serve: Callable[..., Served]) -> None:
    served = serve(env={"BSNN_TUI_TOKEN": "from-the-env"})
    assert served.token == "from-the-env"
    for path in ("/", "/static/js/textual.js", "/ws", "/download/x"):
        assert get(served.url(path))[0] == 403, path
    assert get(served.url("/?token=wrong"))[0] == 403
    assert get(served.url("/?token=from-the-env!"))[0] == 403
    status, set_cookie, page = get(served.url("/?token=from-the-env"))
    assert status == 200 and "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie
    assert "from-the-env" not in set_cookie  # the cookie holds a digest, not the token
    cookie = {"Cookie": cookie_of(set_cookie)}
    assert get(served.url("/"), cookie)[0] == 200  # a reload: the cookie alone
    assert get(served.url("/static/js/textual.js"), cookie)[0] == 200
    wrong = {"Cookie": cookie_of(set_cookie)[:-1] + "0"}
    assert get(served.url("/static/js/textual.js"), wrong)[0] == 403
    # the page: relative URLs only, whatever address served it
    assert re.search(r"(?:https?|wss?)://(?:127\.0\.0\.1|localhost|0\.0\.0\.0)", page) is None
    assert 'src="static/js/textual.js"' in page and 'data-session-websocket-url="ws"' in page


@pytest.mark.timeout(300)
def test_host_and_origin_must_be_this_machine(serve: Callable[..., Served]) -> None:
    served = serve("--token", "tok")
    page = served.url("/?token=tok")
    for host in ("evil.example.com", f"evil.example.com:{served.port}", "127.0.0.1.evil.com",
                 "evil@127.0.0.1", "", "10.1.2.3"):
        assert get(page, {"Host": host})[0] == 403, host
    for host in (f"localhost:{served.port}", f"[::1]:{served.port}", "localhost:9000",
                 "127.0.0.1:9000", "127.0.0.5"):
        assert get(page, {"Host": host})[0] == 200, host
    assert get(page, {"Origin": "http://evil.example"})[0] == 403
    assert get(page, {"Origin": f"http://127.0.0.1:{served.port}"})[0] == 200


# -- the WebSocket ------------------------------------------------------------------------------

@pytest.mark.timeout(300)
def test_the_websocket_needs_the_token_and_its_own_origin(serve: Callable[..., Served]) -> None:
    served = serve("--token", "tok")
    ws, origin = f"ws://127.0.0.1:{served.port}/ws", f"http://127.0.0.1:{served.port}"
    cookie = cookie_of(get(served.url("/?token=tok"))[1])
    assert ws_status(ws, {"Origin": origin}) == 403  # no token
    assert ws_status(ws, {"Origin": origin, "Cookie": cookie[:-1] + "0"}) == 403
    assert ws_status(ws, {"Origin": "http://evil.example", "Cookie": cookie}) == 403
    assert ws_status(ws, {"Origin": "null", "Cookie": cookie}) == 403
    assert ws_status(ws, {"Host": "evil.example.com", "Cookie": cookie}) == 403
    assert ws_status(ws + "?token=tok", {"Origin": "http://evil.example"}) == 403
    assert ws_status(ws, {"Origin": origin, "Cookie": cookie}, first_message=True) == 101


@pytest.mark.timeout(300)
def test_a_tunnel_on_another_port_serves_page_and_websocket(
        serve: Callable[..., Served]) -> None:
    served = serve()  # a random token, read off the printed URL
    assert len(served.token) >= 40
    with forwarder(served.port) as tunnel:
        assert tunnel != served.port
        assert get(served.url("/", port=tunnel))[0] == 403
        status, set_cookie, page = get(served.url(f"/?token={served.token}", port=tunnel))
        assert status == 200 and f":{served.port}" not in page
        cookie = cookie_of(set_cookie)
        assert get(served.url("/static/css/xterm.css", port=tunnel), {"Cookie": cookie})[0] == 200
        for host in ("127.0.0.1", "localhost"):  # the browser's Host and Origin, either name
            assert ws_status(f"ws://127.0.0.1:{tunnel}/ws",
                             {"Host": f"{host}:{tunnel}", "Origin": f"http://{host}:{tunnel}",
                              "Cookie": cookie}, first_message=host == "localhost") == 101


# -- refusing to start --------------------------------------------------------------------------

@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port something already listens on."""
    with socket.create_server(("127.0.0.1", 0)) as s:
        yield s.getsockname()[1]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("args, said", [
    (["--port", "99999"], "--port 99999 is not a port number"),
    (["--port", "-1"], "--port -1 is not a port number"),
    (["--port", "0"], "--port 0 is not a port number"),
    (["--port", "BUSY"], "is already in use"),
    (["--host", "192.0.2.1", "--port", "8000"], "192.0.2.1 is not an address of this machine"),
    (["--token", ""], "--token is empty"),
])
def test_a_bad_address_is_one_line_before_serving(
        args: list[str], said: str, busy_port: int) -> None:
    args = [str(busy_port) if a == "BUSY" else a for a in args]
    done = subprocess.run([sys.executable, "-m", "bsnn_tui", "--serve", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done
    assert "Serving" not in done.stdout and "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and said in lines[0] and " — " in lines[0], done.stderr


# -- the pieces, without a server ---------------------------------------------------------------

def test_guard_rules() -> None:
    from bsnn_tui.serve import Guard

    guard, everywhere = Guard("t", "127.0.0.1", 8000), Guard("t", "0.0.0.0", 8000)
    named = Guard("t", "box.lan", 8000)
    for host in ("127.0.0.1:8000", "localhost", "[::1]:8000", "app.localhost:1", "LOCALHOST:80"):
        assert guard.host_allowed(host), host
    for host in ("evil.com", "box.lan:8000", "192.168.1.5:8000", "[::1", "a b", None, "x/y"):
        assert not guard.host_allowed(host), host
    assert named.host_allowed("box.lan:8000") and not named.host_allowed("box.lan.evil.com")
    assert everywhere.host_allowed("192.168.1.5:8000") and not everywhere.host_allowed("evil.com")
    assert Guard.origin_allowed(None, "localhost:8000")
    assert Guard.origin_allowed("http://localhost:8000", "localhost:8000")
    assert not Guard.origin_allowed("http://localhost:8001", "localhost:8000")
    assert not Guard.origin_allowed("null", "localhost:8000")
    assert not Guard.origin_allowed("file://localhost:8000", "localhost:8000")


def test_the_token_stays_off_the_sessions_command_line() -> None:
    from bsnn_tui.options import serve_command

    command = serve_command(["--serve", "--token", "s3cret", "--token=s3cret", "--time", "8",
                             "--tok", "s3cret", "--to=s3cret", "--ser", "--seed", "1"])
    assert "s3cret" not in command and "--ser " not in command
    assert command.endswith("-m bsnn_tui --time 8 --seed 1")
