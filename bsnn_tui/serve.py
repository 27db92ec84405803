"""`bsnn-tui --serve`: textual-serve's web server, behind a token, on relative URLs.

As Jupyter does it: a secret token (random, or --token / $BSNN_TUI_TOKEN) is printed once in the
URL to open; every request must carry it, in the `token` query parameter or in the cookie the
first tokened answer sets (so reloads and the page's WebSocket work). The Host header must name
this machine (a loopback name or IP, with any port, so that an SSH tunnel on another local port
works; or the served --host), and an Origin, when a browser sends one, must be the Host: a page
of another site cannot reach the dashboard, even by DNS rebinding. The token is the real guard.

The page loads its files and opens its WebSocket by relative URLs, so a forwarded port or a
reverse proxy serves it as well. The listening sockets are bound before anything is printed: a
port in use or an address the machine lacks is one line on stderr and exit code 2.

This module imports textual-serve (an optional extra); bsnn_tui.app imports it only for --serve.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import hmac
import ipaddress
import os
import re
import secrets
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp_jinja2
import jinja2
from aiohttp import web
from textual_serve.server import Server, to_int

from bsnn.errors import ConfigError

TOKEN_ENV = "BSNN_TUI_TOKEN"
COOKIE_PREFIX = "bsnn_tui_token_"
WILDCARDS = frozenset({"", "0.0.0.0", "::"})
# A Host header: a name or IPv4 address, or a bracketed IPv6 one, and an optional port.
HOST_RE = re.compile(r"^(?:\[(?P<ip6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9._-]+))(?::\d{1,5})?$")
FORBIDDEN = ("403: open the URL that `bsnn-tui --serve` printed, with its ?token=... "
             "(the token is also in $BSNN_TUI_TOKEN if you set it there)")
# Run before textual.js reads it (on window load): the page's relative WebSocket URL made
# absolute from the page's own address, ws: or wss: (older browsers take only absolute ones).
WS_URL_SCRIPT = """<script>
  document.querySelectorAll(".textual-terminal").forEach(function (el) {
    var url = new URL(el.dataset.sessionWebsocketUrl, window.location.href);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    el.dataset.sessionWebsocketUrl = url.href;
  });
</script>
</body>"""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# -- the token and the addresses ----------------------------------------------------------------

def pick_token(given: str | None) -> str:
    """--token, else $BSNN_TUI_TOKEN (then dropped from the environment the app sessions get),
    else a random one."""
    from_env = os.environ.pop(TOKEN_ENV, "")
    token = from_env if given is None else given
    if given is not None and not given.strip():
        raise ConfigError("--token is empty", "give a token, or leave --token out for a random one")
    return token or secrets.token_urlsafe(32)


def hostname_of(host_header: str) -> str | None:
    """The name or IP in a Host header (`[::1]:8000` -> `::1`), lower case; None if malformed."""
    found = HOST_RE.match(host_header.strip())
    if found is None:
        return None
    return (found["ip6"] or found["name"]).lower().rstrip(".")


def is_loopback(name: str) -> bool:
    """localhost, *.localhost (browsers resolve those themselves), or a loopback IP."""
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def is_ip(name: str) -> bool:
    """An IP literal: a DNS name that rebinds to this machine cannot be one."""
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class Guard:
    """Who may use the server: the token, and the Host and Origin a browser sends."""

    def __init__(self, token: str, host: str, port: int) -> None:
        self.token = token.encode()
        self.host = host.strip("[]").lower()
        self.cookie = f"{COOKIE_PREFIX}{port}"
        # The cookie holds a digest of the token: cookie-safe characters, whatever the token.
        self.cookie_value = hmac.new(self.token, b"bsnn-tui cookie", hashlib.sha256).hexdigest()

    def host_allowed(self, host_header: str | None) -> bool:
        """A loopback name/IP (any port: a tunnel), the served --host, or, served on all
        addresses, any IP literal or this machine's name."""
        name = hostname_of(host_header or "")
        if name is None:
            return False
        if is_loopback(name) or name == self.host:
            return True
        return self.host in WILDCARDS and (is_ip(name) or name == socket.gethostname().lower())

    @staticmethod
    def origin_allowed(origin: str | None, host_header: str | None) -> bool:
        """No Origin (not a cross-site browser request), or one whose host:port is the Host."""
        if origin is None:
            return True
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not host_header:
            return False
        return parts.netloc.lower() == host_header.strip().lower()

    @staticmethod
    def matches(candidate: str | None, secret: bytes) -> bool:
        """`candidate` is `secret`, compared in constant time."""
        return candidate is not None and hmac.compare_digest(candidate.encode(), secret)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """403 unless Host, Origin and token are right; a tokened URL also sets the cookie."""
        host = request.headers.get("Host")
        if not (self.host_allowed(host)
                and self.origin_allowed(request.headers.get("Origin"), host)):
            raise web.HTTPForbidden(text=FORBIDDEN)
        by_query = self.matches(request.query.get("token"), self.token)
        by_cookie = self.matches(request.cookies.get(self.cookie), self.cookie_value.encode())
        if not (by_query or by_cookie):
            raise web.HTTPForbidden(text=FORBIDDEN)
        response = await handler(request)
        if by_query and not by_cookie and not response.prepared:
            response.set_cookie(self.cookie, self.cookie_value, path="/", httponly=True,
                                samesite="Strict")
        return response


def check_port(port: int) -> None:
    """A TCP port number a server can listen on."""
    if not 1 <= port <= 65535:
        raise ConfigError(f"--port {port} is not a port number",
                          "use one from 1 to 65535 (default 8000)")


def bind_error(host: str, port: int, error: OSError) -> ConfigError:
    """What a failed bind means, and what to do about it."""
    if isinstance(error, socket.gaierror):
        return ConfigError(f"--host {host} is not a known name or address ({error.strerror})",
                           "use an IP address, such as 127.0.0.1 (this machine only)")
    if error.errno == errno.EADDRINUSE:
        return ConfigError(f"port {port} on {host} is already in use",
                           "stop what listens there, or pick another port with --port N")
    if error.errno == errno.EADDRNOTAVAIL:
        return ConfigError(f"{host} is not an address of this machine",
                           "use --host 127.0.0.1 (this machine only) or --host 0.0.0.0 (all "
                           "its addresses)")
    if error.errno in (errno.EACCES, errno.EPERM):
        return ConfigError(f"no permission to listen on port {port}",
                           "use a port from 1024 to 65535")
    return ConfigError(f"cannot listen on {host} port {port} ({error.strerror or error})",
                       "check --host and --port")


def listen_sockets(host: str, port: int) -> list[socket.socket]:
    """Bound sockets for every address `host` names (what aiohttp would bind), or ConfigError:
    the check happens here, before the server prints anything."""
    check_port(port)
    sockets: list[socket.socket] = []
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
    except OSError as error:
        for sock in sockets:
            sock.close()
        raise bind_error(host, port, error) from None
    return sockets


def url_to_open(host: str, port: int, token: str) -> str:
    """The line to print: the tokened URL (two for a server on all addresses)."""
    query = f"/?token={quote(token, safe='')}"
    if host in WILDCARDS:
        return (f"http://{socket.gethostname()}:{port}{query} (or this machine's IP; "
                f"http://127.0.0.1:{port}{query} on this machine)")
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}{query}"


# -- the server ---------------------------------------------------------------------------------

class TokenServer(Server):
    """textual-serve's Server with the Guard in front and a page on relative URLs."""

    def __init__(self, command: str, host: str, port: int, token: str) -> None:
        super().__init__(command, host=host, port=port, title="bsnn-tui")
        self.guard = Guard(token, host, port)
        self.url = url_to_open(host, port, token)

    async def _make_app(self) -> web.Application:
        """textual-serve's app, its index template patched, the Guard as middleware."""
        app = await super()._make_app()
        app.middlewares.append(self.guard.middleware)
        source = (self.templates_path / "app_index.html").read_text(encoding="utf-8")
        patched = source.replace("</body>", WS_URL_SCRIPT, 1)
        aiohttp_jinja2.setup(app, loader=jinja2.ChoiceLoader([
            jinja2.DictLoader({"app_index.html": patched}),
            jinja2.FileSystemLoader(self.templates_path)]))
        return app

    @aiohttp_jinja2.template("app_index.html")
    async def handle_index(self, request: web.Request) -> dict[str, Any]:
        """The page's context, with URLs relative to the page: any host and port serve it."""
        return {
            "font_size": to_int(request.query.get("fontsize", "16"), 16),
            "app_websocket_url": "ws",
            "config": {"static": {"url": "static/"}},
            "application": {"name": self.title},
        }

    async def on_startup(self, app: web.Application) -> None:
        """Nothing yet: the URL is printed once the sockets listen (announce)."""

    def announce(self, *_: object) -> None:
        """Called by aiohttp when it listens: the URL to open, token included."""
        print(f"Serving bsnn-tui on {self.url}\nPress Ctrl+C to quit", flush=True)

    def serve_on(self, sockets: list[socket.socket]) -> None:
        """Serve on these bound sockets until Ctrl+C or SIGTERM."""
        self.initialize_logging()
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.add_signal_handler(signal.SIGINT, self.request_exit)
            loop.add_signal_handler(signal.SIGTERM, self.request_exit)
        except NotImplementedError:  # Windows
            pass
        web.run_app(self._make_app(), sock=sockets, handle_signals=False, loop=loop,
                    print=self.announce)


def serve_app(command: str, host: str, port: int, token: str | None) -> int:
    """Check the address, then serve `command` to browsers; the exit code."""
    try:
        secret = pick_token(token)
        sockets = listen_sockets(host, port)
    except ConfigError as error:
        print(f"bsnn-tui --serve: error: {error}", file=sys.stderr)
        return 2
    TokenServer(command, host, port, secret).serve_on(sockets)
    return 0
