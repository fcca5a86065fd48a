"""A real browser for page tests (a helper module, imported by name like own_devnet): Debian's headless
Chromium driven over the DevTools protocol (a WebSocket; `websockets` is already a dependency), so a
test reads the page as rendered after its JavaScript ran, watches it change without a reload, and
takes screenshots. Also a JSON-RPC proxy that records every eth_getLogs range a client asks for.

    with Chromium(url, tmp) as page:
        page.wait_for("document.querySelector('#head-block') !== null")
        text = page.evaluate("document.body.innerText")
        page.screenshot(path)

Chromium runs in a process group of its own (client.runtime.procs) and is stopped by PID on exit.
"""

from __future__ import annotations

import base64
import json
import shutil
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

from concord.client.runtime import procs


def chromium_path() -> str:
    """The browser the Makefile installs (Debian's `chromium`); a clear failure when it is missing."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        raise RuntimeError("chromium is not installed: run `make test` (it installs Debian's chromium) or apt-get it")
    return found


class PageError(AssertionError):
    """The page did not reach a state in time, or a script threw; says which."""


class Chromium:
    """One headless Chromium with one page open at ``url``."""

    def __init__(self, url: str, tmp: Path, width: int = 1400, height: int = 1800) -> None:
        self.url = url
        self.profile = tmp / "chromium-profile"
        self.profile.mkdir(parents=True, exist_ok=True)
        (self.profile / "DevToolsActivePort").unlink(missing_ok=True)  # an earlier browser's port
        argv = [
            chromium_path(),
            "--headless",
            "--no-sandbox",  # we are root in a container
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--disable-extensions",
            f"--window-size={width},{height}",
            "--remote-debugging-port=0",
            f"--user-data-dir={self.profile}",
            url,
        ]
        self.daemon, self.proc = procs.start("chromium", argv, tmp / "chromium.log")
        self._ids = 0
        self._stack = ExitStack()
        try:
            self.ws = self._stack.enter_context(self._attach())
        except BaseException:
            procs.stop(self.daemon)
            raise

    def _attach(self, timeout: float = 30.0) -> ClientConnection:
        """The page's DevTools WebSocket (the port from <profile>/DevToolsActivePort)."""
        deadline = time.monotonic() + timeout
        port_file = self.profile / "DevToolsActivePort"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = procs.log_tail(self.daemon.log_path, 5)
                raise PageError(f"chromium exited with {self.proc.returncode}: {tail}")
            if port_file.exists() and port_file.read_text().strip():
                port = int(port_file.read_text().split()[0])
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as resp:
                        pages = [t for t in json.load(resp) if t.get("type") == "page"]
                except OSError:  # written a moment before it listens
                    pages = []
                if pages:
                    return connect(pages[0]["webSocketDebuggerUrl"], max_size=None, open_timeout=10)
            time.sleep(0.1)
        raise PageError(f"chromium gave no DevTools port in {timeout:.0f}s")

    def send(self, method: str, params: dict[str, Any] | None = None, timeout: float = 30.0) -> dict[str, Any]:
        self._ids += 1
        me = self._ids
        self.ws.send(json.dumps({"id": me, "method": method, "params": params or {}}))
        deadline = time.monotonic() + timeout
        while True:
            msg = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if msg.get("id") == me:
                if "error" in msg:
                    raise PageError(f"{method}: {msg['error']}")
                return dict(msg["result"])

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        got = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in got:
            raise PageError(f"{expression!r} threw: {got['exceptionDetails'].get('text')} {got['result']}")
        return got["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30.0, what: str = "") -> Any:
        """Poll ``expression`` until it is truthy; its value."""
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.1)
        raise PageError(f"after {timeout:.0f}s the page still fails {what or expression!r} (last value {value!r})")

    def screenshot(self, path: Path) -> Path:
        """A PNG of the whole page (beyond the viewport)."""
        got = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(got["data"]))
        return path

    def close(self) -> None:
        try:
            self._stack.close()
        finally:
            procs.stop(self.daemon)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ----------------------------------------------------------------------------- RPC proxy


@dataclass
class RpcLog:
    """What went through the proxy: every JSON-RPC method name, and each eth_getLogs (fromBlock, toBlock)."""

    methods: list[str] = field(default_factory=list)
    get_logs: list[tuple[int, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    down: bool = False  # while True the proxy answers 503 (a chain that stopped answering)

    def record(self, call: dict[str, Any]) -> None:
        with self.lock:
            self.methods.append(call.get("method", "?"))
            if call.get("method") == "eth_getLogs":
                (flt,) = call["params"]
                self.get_logs.append((int(flt["fromBlock"], 16), int(flt["toBlock"], 16)))


@contextmanager
def rpc_proxy(upstream: str) -> Iterator[tuple[str, RpcLog]]:
    """An HTTP JSON-RPC proxy on a free local port in front of ``upstream``; yields (its URL, its log)."""
    log = RpcLog()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if log.down:
                self.send_response(503)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            payload = json.loads(body)
            for call in payload if isinstance(payload, list) else [payload]:
                log.record(call)
            req = urllib.request.Request(upstream, body, {"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=30) as resp:
                answer = resp.read()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.1,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", log
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
