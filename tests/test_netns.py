"""A wide-area network on one machine (scripts/netns.py, issue 23 item 2): namespaces on a bridge with
tbf upload limits. A limited link is measurably slower than an unlimited one and runs at its limit;
the chain RPC on the root side is reachable from a namespace; a Helia peer in one namespace fetches
a block from a Helia peer in another; nothing is left behind (namespaces, veths, bridge, qdiscs,
processes), also on an exception and on SIGTERM.

Needs root: skipped, with the kernel's or the missing privilege's reason, only where `ip netns add`
is refused.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from concord.client.content.store import Store
from concord.client.runtime import procs
from scripts import devnet, netns
from scripts.netns import Network

REFUSED = netns.available()
pytestmark = [pytest.mark.integration, pytest.mark.skipif(REFUSED is not None, reason=str(REFUSED))]

MB = 1_000_000


def _left(tag: str) -> list[str]:
    """Namespaces and links of ``tag`` that still exist."""
    ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    links = subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True, check=True).stdout
    names = [line.split()[0] for line in ns.splitlines() if line.strip()]
    names += [str(link["ifname"]) for link in json.loads(links)]
    return [n for n in names if n.startswith(tag)]


def test_a_limited_link_runs_at_its_limit_and_an_unlimited_one_far_faster() -> None:
    with Network() as net:
        slow, fast, sink = net.add("slow", upload_mbit=20), net.add("fast"), net.add("sink")
        assert "tbf" in net.run(slow, ["tc", "qdisc", "show", "dev", "eth0"]).stdout
        limited_s = netns.measure_tcp(net, slow, sink, 20 * MB)
        free_s = netns.measure_tcp(net, fast, sink, 20 * MB)
        up = net.counters(slow).uploaded
    limited_mbit = 20 * MB * 8 / limited_s / 1e6
    # tbf counts frames: TCP payload gets ~95.6% of 20 Mbit/s (1448 of 1514 bytes); the band allows
    # for a loaded machine below and the bucket's 10 ms burst above
    assert 0.80 * 20 <= limited_mbit <= 1.02 * 20, f"{limited_mbit:.1f} Mbit/s over a 20 Mbit/s link"
    assert free_s * 5 < limited_s, f"unlimited {free_s:.2f}s vs limited {limited_s:.2f}s"
    assert 20 * MB <= up <= 20 * MB * 1.08  # the bridge-side counter saw the payload plus headers


def test_teardown_leaves_no_namespace_veth_bridge_qdisc_or_process_also_on_an_exception() -> None:
    with pytest.raises(RuntimeError, match="boom"), Network() as net:
        tag = net.tag
        node = net.add("a", upload_mbit=5, download_mbit=5)
        daemon, _ = net.start(node, "sleeper", ["sleep", "300"], Path(f"/tmp/{tag}-sleeper.log"))
        assert _left(tag) and procs.is_ours(daemon)
        assert "tbf" in subprocess.run(["tc", "qdisc", "show", "dev", node.veth], capture_output=True, text=True).stdout
        raise RuntimeError("boom")
    assert _left(tag) == []
    assert not procs.is_ours(daemon)
    assert tag not in netns.tags()
    Path(f"/tmp/{tag}-sleeper.log").unlink(missing_ok=True)


CHILD = """
import sys, time
from pathlib import Path
from scripts.netns import Network
with Network() as net:
    node = net.add("a", upload_mbit=10)
    d, _ = net.start(node, "sleeper", ["sleep", "300"], Path(sys.argv[1]))
    print(net.tag, d.pid, flush=True)
    time.sleep(300)
"""


def test_sigterm_tears_the_network_down(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[1]
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path / "sleeper.log")], cwd=root, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        tag, pid = child.stdout.readline().split()
        assert _left(tag)
        child.send_signal(signal.SIGTERM)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert _left(tag) == []
    assert not procs.alive(int(pid))


def test_the_chain_rpc_on_the_bridge_and_a_block_between_helia_peers_in_two_namespaces(tmp_path: Path) -> None:
    with Network() as net:
        a, b = net.add("a", upload_mbit=100), net.add("b", upload_mbit=100)
        # Anvil in the root namespace on the bridge's address: every namespace reaches it there
        port = procs.free_port(net.gateway)
        argv = [str(devnet.anvil_binary()), "--host", net.gateway, "--port", str(port)]
        rpc = f"http://{net.gateway}:{port}"
        anvil = devnet.start_ready("anvil", argv, tmp_path / "anvil.log", lambda: devnet.rpc_ready(rpc), 30)
        net.track(anvil)
        call = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []})
        ask = (
            "import sys, urllib.request; r = urllib.request.Request(sys.argv[1], data=sys.argv[2].encode(), "
            "headers={'Content-Type': 'application/json'}); "
            "print(urllib.request.urlopen(r, timeout=10).read().decode())"
        )
        answer = json.loads(net.run(b, [sys.executable, "-c", ask, rpc, call]).stdout)
        assert answer["result"] == "0x7a69"  # 31337, Anvil's chain id

        peers = []
        for node, dials in ((a, ()), (b, ())):
            api_port, swarm_port = 5001, 4001  # each namespace has its own ports
            d = devnet.start_helia(tmp_path / node.name, api_port, swarm_port, dials, host=node.address, wrap=node.wrap)
            net.track(d)
            url = f"http://{node.address}:{api_port}"
            peers.append((url, devnet.helia_swarm_addr(url, host=node.address)))
        devnet.swarm_connect(peers[1][0], peers[0][1])
        data = os.urandom(300_000)
        ref = Store(f"/ip4/{a.address}/tcp/5001/http", None, timeout=20.0).put_file(data, name="x.bin")
        before = net.counters(a).uploaded
        got = Store(f"/ip4/{b.address}/tcp/5001/http", None, timeout=20.0).get_file(ref, tmp_path / "x", len(data))
        assert got.read_bytes() == data
        assert net.counters(a).uploaded - before >= len(data)  # it crossed a's link, not a shared daemon
        tag = net.tag
    assert _left(tag) == []
    assert not procs.is_ours(anvil) and not procs.alive(d.pid)


def test_a_cut_link_carries_nothing_and_comes_back_with_its_limits() -> None:
    """Churn (issue 23 item 5): ``net.cut(node)`` takes the node off the bridge and gives it back with
    the same address, routes and tbf limits, also when the body raises."""
    with Network() as net:
        a, b = net.add("a"), net.add("b", upload_mbit=20, download_mbit=20)

        def reaches() -> bool:
            # a TCP connect to a closed port of b: refused (an RST came back) when b is reachable,
            # a timeout when the link is cut (no ping here: iputils is not installed)
            probe = (
                "import socket, sys\n"
                "try:\n    socket.create_connection((sys.argv[1], 9), timeout=1.0)\n"
                "except ConnectionRefusedError:\n    sys.exit(0)\n"
                "except OSError:\n    sys.exit(1)\n"
            )
            return net.run(a, [sys.executable, "-c", probe, b.address], check=False).returncode == 0

        def qdiscs() -> str:
            inside = net.run(b, ["tc", "qdisc", "show", "dev", netns.NS_IF]).stdout
            outside = subprocess.run(["tc", "qdisc", "show", "dev", b.veth], capture_output=True, text=True).stdout
            return inside + outside

        assert reaches()
        limits = qdiscs()
        assert limits.count("tbf") == 2, limits
        with pytest.raises(RuntimeError), net.cut(b):
            assert not reaches()
            raise RuntimeError("the body fails: the link is restored all the same")
        assert reaches()
        assert qdiscs() == limits
        net.set_link(b, False)
        assert not reaches()
        net.set_link(b, True)
        assert reaches()
