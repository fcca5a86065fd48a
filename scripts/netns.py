"""A wide-area network on one machine: Linux network namespaces on a bridge, each link rate-limited
(issue 23, item 2). Lab side; needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN for `ip netns`).

    with Network() as net:                      # a fresh tag, e.g. "cn3fa2b1"; a bridge cn3fa2b1br
        a = net.add("a", upload_mbit=20)        # namespace cn3fa2b1-a, 10.X.Y.2 on the bridge
        b = net.add("b")                        # no limit
        net.run(a, ["ping", "-c1", b.address])  # ip netns exec cn3fa2b1-a ping ...
        net.start(b, "helia", argv, log)        # a daemon inside b, stopped by PID on the way out

Layout: one bridge ``<tag>br`` in the root namespace holding the subnet's first address (the
gateway: Anvil and anything else on the root side is reached there, so the chain RPC must listen
on ``net.gateway``, not only 127.0.0.1), and per node a namespace ``<tag>-<name>`` joined by a
veth pair: ``<tag>h<i>`` on the bridge, ``eth0`` inside (with ``lo`` up, a default route via the
gateway). The subnet is a private 10.200-254.N.0/24 no interface on this machine uses yet, so two
concurrent runs get two subnets. Nothing is forwarded or NATed: traffic stays on this machine.

Limits: ``upload_mbit`` is a tbf qdisc on the namespace's ``eth0`` (what the node sends),
``download_mbit`` one on the bridge side ``<tag>h<i>`` (what it receives). tbf, not netem (not in
this kernel): a rate and a queue, no added delay or loss. tbf counts whole frames, so TCP payload
gets ~95% of the rate (1448 of 1514 bytes per full frame).

Churn: ``net.set_link(node, False)`` (or ``with net.cut(node):``) takes the node's bridge-side
veth down, cutting it off the network; ``set_link(node, True)`` restores it, limits unchanged.

Counters: ``net.counters(node)`` reads the bridge-side veth's byte counters from
/sys/class/net; what the node uploaded is that interface's rx_bytes, what it downloaded its tx_bytes.

Teardown (``close``, run by ``__exit__`` also on an exception, Ctrl-C or SIGTERM, which
``procs.no_orphans`` turns into an exception): every daemon started with ``start`` is stopped by
PID, whatever else still runs in a namespace of ours is killed, the namespaces are deleted (their
veths, and the qdiscs on them, go with them), then the bridge. ``cleanup(tag)`` does the same for
the leftovers of a run that was killed -9 (``cleanup()``: every tag of this module's prefix).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from concord.client.runtime import procs
from concord.client.runtime.procs import Daemon

TAG_PREFIX = "cn"  # "concord netns": every namespace, bridge and veth of this module starts with it
TAG_HEX = 6  # cn + 6 hex: interface names stay under the kernel's 15 characters (<tag>h<i>)
SUBNET_SECOND_OCTETS = range(200, 255)  # 10.200.0.0 - 10.254.255.0: /24s picked from here
NS_IF = "eth0"  # the veth end inside every namespace
MTU = 1500


class NetnsError(Exception):
    """Base for harness failures; one line naming what failed."""


class NamespacesRefused(NetnsError):
    """The kernel (or the lack of root) refuses network namespaces: tests skip with this reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"network namespaces unavailable: {reason}")
        self.reason = reason


class CommandFailed(NetnsError):
    def __init__(self, argv: Sequence[str], rc: int, stderr: str) -> None:
        super().__init__(f"`{' '.join(argv)}` failed (exit {rc}): {stderr.strip()[:300]}")
        self.argv = list(argv)
        self.rc = rc


class BadNode(NetnsError):
    def __init__(self, field: str, value: object, why: str) -> None:
        super().__init__(f"node {field}={value!r}: {why}")
        self.field = field
        self.value = value


@dataclass(frozen=True)
class Node:
    """One namespace on the bridge."""

    name: str
    netns: str  # <tag>-<name>
    veth: str  # the bridge-side end, in the root namespace (<tag>h<i>)
    address: str  # on the bridge's subnet, on eth0 inside the namespace
    upload_mbit: float | None  # tbf on eth0 inside (None: unlimited)
    download_mbit: float | None  # tbf on the bridge-side end (None: unlimited)

    @property
    def wrap(self) -> list[str]:
        """The prefix that runs a command inside this namespace."""
        return ["ip", "netns", "exec", self.netns]


@dataclass(frozen=True)
class Counters:
    uploaded: int  # bytes the node sent (bridge-side rx_bytes), whole frames
    downloaded: int  # bytes the node received (bridge-side tx_bytes)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    argv = ["ip", *args]
    r = subprocess.run(argv, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise CommandFailed(argv, r.returncode, r.stderr)
    return r


def _tc(*args: str) -> None:
    argv = ["tc", *args]
    r = subprocess.run(argv, capture_output=True, text=True)
    if r.returncode != 0:
        raise CommandFailed(argv, r.returncode, r.stderr)


def available() -> str | None:
    """None when this process may create network namespaces, else why not (a probe namespace is
    created and deleted)."""
    if os.geteuid() != 0:
        return "not root (ip netns needs CAP_NET_ADMIN and CAP_SYS_ADMIN)"
    try:
        probe = f"{TAG_PREFIX}probe{os.getpid()}"
        r = _ip("netns", "add", probe, check=False)
    except FileNotFoundError:
        return "the `ip` command (iproute2) is not installed"
    if r.returncode != 0:
        return f"`ip netns add` refused: {r.stderr.strip()[:200]}"
    _ip("netns", "del", probe, check=False)
    return None


def new_tag() -> str:
    return TAG_PREFIX + secrets.token_hex(TAG_HEX // 2)


def _used_networks() -> list[ipaddress.IPv4Network]:
    r = _ip("-j", "-4", "addr", "show")
    nets = []
    for link in json.loads(r.stdout or "[]"):
        for a in link.get("addr_info", []):
            nets.append(ipaddress.ip_network(f"{a['local']}/{a['prefixlen']}", strict=False))
    return nets


def _free_subnet() -> ipaddress.IPv4Network:
    used = _used_networks()
    candidates = [
        ipaddress.IPv4Network(f"10.{second}.{third}.0/24")
        for second in SUBNET_SECOND_OCTETS
        for third in range(0, 256, 17)  # a spread, not all 14,000
    ]
    free = [n for n in candidates if not any(n.overlaps(u) for u in used)]
    if not free:
        raise NetnsError("no free 10.200-254.x.0/24 subnet left for a bridge")
    return free[secrets.randbelow(len(free))]  # two runs starting at once rarely pick the same


def _burst_bytes(mbit: float) -> int:
    """tbf's bucket: 10 ms of the rate, at least 4 full frames (and above rate/HZ at any HZ)."""
    return max(int(mbit * 1e6 / 8 * 0.010), 4 * MTU + 64)


def _limit(dev: str, mbit: float, netns: str | None) -> None:
    """A tbf of ``mbit`` as the root qdisc of ``dev`` (inside ``netns`` when given): egress only."""
    pre = ["-n", netns] if netns else []
    burst = _burst_bytes(mbit)
    # queue: 100 ms of the rate (at least 64 KiB), so TCP sees a queue, not losses, at the limit
    limit = max(int(mbit * 1e6 / 8 * 0.100), 65536)
    _tc(
        *pre,
        "qdisc",
        "replace",
        "dev",
        dev,
        "root",
        "tbf",
        "rate",
        f"{mbit}mbit",
        "burst",
        str(burst),
        "limit",
        str(limit),
    )


class Network:
    """Namespaces on one bridge, torn down on the way out; a context manager (see the module doc)."""

    def __init__(self, tag: str | None = None, log_dir: Path | None = None) -> None:
        self.tag = tag or new_tag()
        if not self.tag.startswith(TAG_PREFIX) or len(self.tag) > 2 + len(TAG_PREFIX) + TAG_HEX:
            raise BadNode("tag", self.tag, f"expected {TAG_PREFIX} + up to {TAG_HEX + 2} characters")
        self.bridge = f"{self.tag}br"
        self.nodes: dict[str, Node] = {}
        self.daemons: list[Daemon] = []
        self.log_dir = log_dir
        self.gateway = ""  # the bridge's address, set on entry
        self._subnet: ipaddress.IPv4Network | None = None
        self._hosts: Iterator[ipaddress.IPv4Address] | None = None
        self._stack = contextlib.ExitStack()

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Network:
        reason = available()
        if reason is not None:
            raise NamespacesRefused(reason)
        self._stack.enter_context(procs.no_orphans())  # SIGTERM/SIGHUP now unwind like Ctrl-C
        try:
            self._up()
        except BaseException:
            self.__exit__(*sys.exc_info())
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            with procs.signals_ignored():  # a second Ctrl-C must not leave a namespace behind
                self.close()
        finally:
            self._stack.__exit__(exc_type, exc, tb)

    def open(self) -> Network:
        """The bridge, made without ``with``: for a network that outlives this process (`concord devnet
        up --netns` records the tag in its state file; `concord devnet down` runs ``cleanup(tag)``).
        A failure here leaves nothing; afterwards the caller owns it (``close``, or ``cleanup(tag)``
        from another process). No signal handling of its own: the caller's ``procs.no_orphans``."""
        reason = available()
        if reason is not None:
            raise NamespacesRefused(reason)
        try:
            self._up()
        except BaseException:
            with procs.signals_ignored():
                self.close()
            raise
        return self

    def _up(self) -> None:
        self._subnet = _free_subnet()
        self._hosts = self._subnet.hosts()
        gateway = next(self._hosts)
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{gateway}/{self._subnet.prefixlen}", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        self.gateway = str(gateway)

    def close(self) -> None:
        """Stop what we started, delete the namespaces (veths and qdiscs go with them) and the bridge."""
        procs.stop_all(self.daemons, timeout=5.0)
        self.daemons.clear()
        cleanup(self.tag)
        self.nodes.clear()

    # ------------------------------------------------------------------ nodes

    def add(self, name: str, upload_mbit: float | None = None, download_mbit: float | None = None) -> Node:
        """A namespace ``<tag>-<name>`` on the bridge with its own address and limits."""
        if not name or not all(c.isalnum() or c in "-_" for c in name) or len(name) > 40:
            raise BadNode("name", name, "expected 1-40 letters, digits, - or _")
        if name in self.nodes:
            raise BadNode("name", name, "already on this network")
        for field, mbit in (("upload_mbit", upload_mbit), ("download_mbit", download_mbit)):
            if mbit is not None and not 0.01 <= mbit <= 100_000:
                raise BadNode(field, mbit, "expected 0.01-100000 Mbit/s or None (unlimited)")
        if self._hosts is None:
            raise NetnsError("Network.add outside `with Network() as net:`")
        address = str(next(self._hosts))
        node = Node(name, f"{self.tag}-{name}", f"{self.tag}h{len(self.nodes)}", address, upload_mbit, download_mbit)
        self.nodes[name] = node  # before creating anything: close() finds it by tag either way
        _ip("netns", "add", node.netns)
        _ip("link", "add", node.veth, "type", "veth", "peer", "name", NS_IF, "netns", node.netns)
        _ip("link", "set", node.veth, "master", self.bridge)
        _ip("link", "set", node.veth, "up")
        assert self._subnet is not None
        n = ["-n", node.netns]
        _ip(*n, "addr", "add", f"{address}/{self._subnet.prefixlen}", "dev", NS_IF)
        _ip(*n, "link", "set", NS_IF, "up")
        _ip(*n, "link", "set", "lo", "up")
        _ip(*n, "route", "add", "default", "via", self.gateway)
        if upload_mbit is not None:
            _limit(NS_IF, upload_mbit, node.netns)
        if download_mbit is not None:
            _limit(node.veth, download_mbit, None)
        return node

    def run(
        self, node: Node, argv: Sequence[str], timeout: float | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """``argv`` inside the node's namespace, to completion; its output captured."""
        full = [*node.wrap, *argv]
        r = subprocess.run(full, capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise CommandFailed(full, r.returncode, r.stderr)
        return r

    def start(
        self, node: Node, name: str, argv: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None
    ) -> tuple[Daemon, subprocess.Popen[bytes]]:
        """A daemon inside the node's namespace (procs.start: own process group, by PID), stopped by ``close``.
        `ip netns exec` execs the command, so the PID is the daemon's own."""
        daemon, proc = procs.start(name, [*node.wrap, *argv], log_path, env=env)
        self.daemons.append(daemon)
        return daemon, proc

    def track(self, daemon: Daemon) -> None:
        """A daemon started elsewhere (devnet.start_helia(..., wrap=node.wrap)) that ``close`` stops."""
        self.daemons.append(daemon)

    def set_link(self, node: Node, up: bool) -> None:
        """Cut (``up=False``) or restore the node's link to the bridge: its bridge-side veth down or
        up. Cut, nothing enters or leaves the namespace (its eth0 sees no carrier; its address, routes
        and both tbf limits stay, so a restored link has the same limits as before)."""
        _ip("link", "set", node.veth, "up" if up else "down")

    @contextlib.contextmanager
    def cut(self, node: Node) -> Iterator[None]:
        """The node's link cut for the body of the ``with`` (restored also on an exception)."""
        self.set_link(node, False)
        try:
            yield
        finally:
            self.set_link(node, True)

    def counters(self, node: Node) -> Counters:
        stats = Path("/sys/class/net") / node.veth / "statistics"
        rx = int((stats / "rx_bytes").read_text())
        tx = int((stats / "tx_bytes").read_text())
        return Counters(uploaded=rx, downloaded=tx)


# ----------------------------------------------------------------------------- a measured link

_RECEIVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 0)); s.listen(1)
print(s.getsockname()[1], flush=True)
c, _ = s.accept(); n = 0
while True:
    b = c.recv(1 << 20)
    if not b: break
    n += len(b)
c.sendall(n.to_bytes(8, "big")); c.close()
"""

_SENDER = """
import socket, sys, time
host, port, total = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
buf = bytes(1 << 20)
c = socket.create_connection((host, port), timeout=120)
t = time.perf_counter(); left = total
while left > 0:
    left -= c.send(buf[: min(left, len(buf))])
c.shutdown(socket.SHUT_WR)
got = int.from_bytes(c.recv(8), "big")
print(got, time.perf_counter() - t)
"""


def measure_tcp(net: Network, sender: Node, receiver: Node, nbytes: int, timeout: float = 120.0) -> float:
    """Seconds to send ``nbytes`` over one TCP connection from ``sender`` to ``receiver`` (both
    namespaces of ``net``), from connect to the receiver's count of every byte."""
    rx = subprocess.Popen(
        [*receiver.wrap, sys.executable, "-c", _RECEIVER, receiver.address],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert rx.stdout is not None
        port = rx.stdout.readline().strip()
        if not port.isdigit():
            raise NetnsError(f"TCP receiver in {receiver.netns} did not start: {rx.stderr.read() if rx.stderr else ''}")
        out = net.run(sender, [sys.executable, "-c", _SENDER, receiver.address, port, str(nbytes)], timeout=timeout)
        got, seconds = out.stdout.split()
        if int(got) != nbytes:
            raise NetnsError(f"TCP receiver in {receiver.netns} counted {got} of {nbytes} bytes")
        return float(seconds)
    finally:
        if rx.poll() is None:
            os.killpg(rx.pid, signal.SIGKILL)
        rx.wait()


# ----------------------------------------------------------------------------- leftovers


def tags() -> list[str]:
    """Tags of this module's namespaces and bridges that exist now (leftovers, or runs in progress)."""
    found = set()
    for ns in _netns_names():
        if ns.startswith(TAG_PREFIX) and "-" in ns:
            found.add(ns.split("-", 1)[0])
    for link in _link_names():
        if link.startswith(TAG_PREFIX) and link.endswith("br"):
            found.add(link.removesuffix("br"))
    return sorted(found)


def _netns_names() -> list[str]:
    r = _ip("netns", "list", check=False)
    return [line.split()[0] for line in r.stdout.splitlines() if line.strip()]


def _link_names() -> list[str]:
    r = _ip("-j", "link", "show", check=False)
    return [str(link["ifname"]) for link in json.loads(r.stdout or "[]")]


def _ns_pids(netns: str) -> list[int]:
    r = _ip("netns", "pids", netns, check=False)
    return [int(p) for p in r.stdout.split() if p.isdigit()]


def cleanup(tag: str) -> list[str]:
    """Remove every namespace, veth and bridge of ``tag`` (killing what still runs in its namespaces,
    which only this harness put there); returns what was removed. Safe to call twice."""
    if not tag.startswith(TAG_PREFIX) or len(tag) <= len(TAG_PREFIX):
        raise BadNode("tag", tag, f"expected {TAG_PREFIX}<hex>")
    removed = []
    for ns in _netns_names():
        if ns.startswith(f"{tag}-"):
            for pid in _ns_pids(ns):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 5
            while _ns_pids(ns) and time.monotonic() < deadline:
                time.sleep(0.05)
            _ip("netns", "del", ns, check=False)
            removed.append(ns)
    for link in _link_names():
        # a veth whose namespace is gone is gone too; one left (a half-made node) and the bridge go here
        if link.startswith(f"{tag}h") or link == f"{tag}br":
            _ip("link", "del", link, check=False)
            removed.append(link)
    return removed


def main(argv: Sequence[str] | None = None) -> int:
    """python -m scripts.netns [--cleanup [TAG...]]: list (or remove) this harness's leftovers."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--cleanup"]:
        for tag in args[1:] or tags():
            for what in cleanup(tag):
                print(f"removed {what}")
        return 0
    if args:
        print("usage: python -m scripts.netns [--cleanup [TAG...]]", file=sys.stderr)
        return 2
    for tag in tags():
        print(tag)
    return 0


if __name__ == "__main__":
    sys.exit(main())
