"""`concord dashboard`: serve the live page and its JSON on a local port.

    concord dashboard [--task ID] [--devnet FILE | --rpc-url URL --deployment FILE --ipfs-api ADDR]
                      [--host 127.0.0.1] [--port 8750] [--validator-state DIR]... [--poll-interval S]

One thread refreshes the document (`state.Dashboard.refresh`: the new blocks' logs only, the views
when the head moved); HTTP threads only hand out the last document, so however many pages are open
the RPC sees one poller. Routes:

    /                 the page (static/index.html; app.js polls /api/state and redraws on a new head)
    /static/NAME      app.js, style.css: package data, nothing from the network
    /api/state        the document as JSON (amounts as decimal strings of base units, digests 0x-hex);
                      every route refuses a Host header that does not name the bind address (DNS rebinding)
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources

from concord.client import chain
from concord.client.content.store import Store
from concord.client.dashboard.state import Dashboard, Source
from concord.client.runtime import parsers, paths
from concord.client.runtime.config import NodeConfigError, load_deployment, load_devnet_json
from concord.client.runtime.errors import explain, quiet_retries
from concord.client.runtime.task import UnknownTask

log = logging.getLogger(__name__)

DEFAULT_HOST = parsers.DASHBOARD_HOST
DEFAULT_PORT = parsers.DASHBOARD_PORT
DEFAULT_POLL_S = parsers.DASHBOARD_POLL_S
STATIC = {  # the only files served: name -> content type
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}


def static_file(name: str) -> bytes:
    """A file of the page, from the installed package (the wheel ships static/)."""
    return resources.files("concord.client.dashboard").joinpath("static", name).read_bytes()


class _Handler(BaseHTTPRequestHandler):
    server: DashboardHTTPServer

    def do_GET(self) -> None:
        host = self.headers.get("Host")
        if not self.server.host_allowed(host):
            # DNS rebinding: a page of another site whose name resolves to this address must not read the state
            self._send(
                HTTPStatus.FORBIDDEN,
                "text/plain; charset=utf-8",
                f"refused: Host {host!r} is not this dashboard's address ({self.server.url})\n".encode(),
            )
            return
        path = self.path.split("?", 1)[0]
        if path == "/api/state":
            self._send(HTTPStatus.OK, "application/json", self.server.dashboard.document_json())
        elif path in ("/", "/index.html"):
            self._send(HTTPStatus.OK, STATIC["index.html"], static_file("index.html"))
        elif path.startswith("/static/") and path.removeprefix("/static/") in STATIC:
            name = path.removeprefix("/static/")
            self._send(HTTPStatus.OK, STATIC[name], static_file(name))
        else:
            self._send(HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8", f"not found: {path}\n".encode())

    def _send(self, status: HTTPStatus, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s %s", self.address_string(), format % args)


class DashboardHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], dashboard: Dashboard) -> None:
        super().__init__(address, _Handler)
        self.dashboard = dashboard

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}/"

    def host_allowed(self, header: str | None) -> bool:
        """Whether a request's Host header names this server (host_allowed's rule)."""
        return host_allowed(header, str(self.server_address[0]), int(self.server_address[1]))


ANY_ADDRESS = ("0.0.0.0", "::", "")


def _ip_literal(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def split_host(header: str) -> tuple[str, int | None] | None:
    """A Host header as (name, port or None); None when it is not one (`[::1]:8750`, `localhost:8750`)."""
    header = header.strip().lower()
    if header.startswith("["):
        end = header.find("]")
        if end < 0:
            return None
        name, rest = header[1:end], header[end + 1 :]
        if rest and not rest.startswith(":"):
            return None
        port = rest[1:]
    elif header.count(":") == 1:
        name, port = header.split(":")
    elif ":" in header:  # an IPv6 literal without brackets is no Host header
        return None
    else:
        name, port = header, ""
    if not name or (port and not port.isdigit()):
        return None
    return name, int(port) if port else None


def host_allowed(header: str | None, bound: str, port: int) -> bool:
    """Whether a Host header names a server bound to ``bound``:``port``: the bind address itself; bound to a
    loopback address, also `localhost` and loopback literals; bound to every interface (0.0.0.0, ::), any IP
    literal and `localhost`. The port must be the server's. A DNS name that merely resolves here (DNS
    rebinding: another site's page reading the state) is refused, whatever it resolves to."""
    parsed = split_host(header) if header else None
    if parsed is None:
        return False
    name, given = parsed
    if (given if given is not None else 80) != port:
        return False
    if name == bound.lower():
        return True
    literal, own = _ip_literal(name), _ip_literal(bound)
    if bound in ANY_ADDRESS:
        return name == "localhost" or literal is not None
    loopback = own is not None and own.is_loopback
    return loopback and (name == "localhost" or (literal is not None and literal.is_loopback))


def _refresh_loop(dashboard: Dashboard, stop: threading.Event, interval: float) -> None:
    """Refresh until stopped. A failure the refresh does not expect is logged and retried next time:
    the page keeps its last document rather than freezing with a dead thread."""
    while not stop.is_set():
        try:
            dashboard.refresh()
        except Exception:
            log.exception("dashboard refresh failed; retrying in %.1fs", interval)
        stop.wait(interval)


@contextmanager
def serving(
    dashboard: Dashboard, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, interval: float = DEFAULT_POLL_S
) -> Iterator[DashboardHTTPServer]:
    """The server and its refresher running in threads of this process; both stopped on exit.
    OSError when the port cannot be bound. The first document is built before this yields."""
    server = DashboardHTTPServer((host, port), dashboard)
    stop = threading.Event()
    dashboard.refresh()
    threads = [
        threading.Thread(target=_refresh_loop, args=(dashboard, stop, interval), name="dashboard-refresh", daemon=True),
        threading.Thread(target=server.serve_forever, args=(0.2,), name="dashboard-http", daemon=True),
    ]
    for t in threads:
        t.start()
    try:
        yield server
    finally:
        stop.set()
        server.shutdown()
        server.server_close()
        for t in threads:
            t.join(timeout=10)


def open_dashboard(source: Source) -> Dashboard:
    """Connect to the chain (ChainError when it cannot) and check the task exists (UnknownTask)."""
    client = chain.connect(source.rpc_url, source.deployment)
    if source.task_id is not None:
        count = client.concord.task_count()
        if not 1 <= source.task_id <= count:
            raise UnknownTask(source.task_id, count)
    store = None
    if source.ipfs_api is not None:
        store = Store(source.ipfs_api, paths.home() / "dashboard-cache", timeout=3.0, retries=1)
    return Dashboard(client, source, store)


# ----------------------------------------------------------------------------- CLI


def parser() -> argparse.ArgumentParser:
    return parsers.dashboard_parser()


def source_of(args: argparse.Namespace) -> Source:
    """Flags (+ the devnet JSON) -> a Source; NodeConfigError names the flag."""
    ipfs_api = args.ipfs_api
    if args.rpc_url is not None:
        if args.deployment is None:
            raise NodeConfigError("--deployment", "needed with --rpc-url")
        if not args.rpc_url.startswith(("http://", "https://", "ws://", "wss://")):
            raise NodeConfigError("--rpc-url", f"expected http(s):// or ws(s)://, got {args.rpc_url!r}")
        rpc_url, deployment = args.rpc_url, load_deployment(args.deployment)
    else:
        net = load_devnet_json(args.devnet or paths.default_network_file())
        rpc_url, deployment = net.rpc_url, chain.Deployment.from_json(net.deployment)
        ipfs_api = ipfs_api or net.ipfs_api
    if args.validator_state is not None:
        return Source(rpc_url, deployment, ipfs_api, args.task, tuple(args.validator_state))
    return Source(rpc_url, deployment, ipfs_api, args.task, (), validator_root=paths.nodes_dir())


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until Ctrl-C / SIGTERM; an error is one line naming the flag, exit status 1."""
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    quiet_retries()  # the one error line below says it all
    try:
        source = source_of(args)
        dashboard = open_dashboard(source)
        ctx = serving(dashboard, args.host, args.port, args.poll_interval)
        server = ctx.__enter__()
    except (NodeConfigError, UnknownTask, chain.ChainError, ValueError) as e:
        print(f"error: {explain(e)}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"error: --host/--port: cannot serve on {args.host}:{args.port}: {e.strerror or e}", file=sys.stderr)
        return 1
    what = f"task {source.task_id}" if source.task_id is not None else "every task"
    print(f"dashboard: {server.url} ({what} on {source.rpc_url}); Ctrl-C stops it", flush=True)
    try:
        threading.Event().wait()
    finally:
        ctx.__exit__(None, None, None)
    return 0  # not reached: Ctrl-C / SIGTERM end it


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
