"""Devnet up/down against the real daemons: what up writes, that down stops exactly those PIDs,
and that a busy port, a missing binary or a daemon that dies gives one clear line and leaves
nothing running; the chain's clock (blocks without transactions) and the IPFS peers' mesh
(one per node, added peers recorded and stopped by down). `devnet up --netns` (issue 23 item 2):
each peer in its own namespace with a rate-limited link, reached across the bridge, the chain
reached from every namespace; `down`, a SIGTERM during `up` and a bad peer name leave no namespace,
veth, bridge or daemon (skipped, with the kernel's reason, only where namespaces are refused).
Also: the js-ipfs fixture stores and returns a block."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import ipfshttpclient
import pytest
from own_devnet import free_ports

from concord.client import chain
from concord.client.chain import keys
from concord.client.content.manifest import canonical_bytes
from concord.client.content.store import Store
from concord.client.runtime import procs
from scripts import REPO_ROOT, devnet, netns


def _children() -> set[int]:
    """Live (non-zombie) processes whose parent is this test process."""
    me = os.getpid()
    return {pid for pid, fields in procs.live_processes().items() if int(fields[1]) == me}


@pytest.fixture
def listener() -> Iterator[int]:
    """A port something is listening on."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    try:
        yield s.getsockname()[1]
    finally:
        s.close()


def test_ipfs_fixture_adds_and_cats_a_block(ipfs) -> None:
    client = ipfshttpclient.Client(ipfs.api, timeout=10)
    data = b"concord devnet block " * 10
    cid = client.add_bytes(data)
    assert client.cat(cid) == data
    raw = client.block.put(__import__("io").BytesIO(b"raw block"), opts={"format": "raw", "mhtype": "sha2-256"})
    assert client.block.get(raw["Key"]) == b"raw block"


@pytest.mark.slow
def test_up_writes_state_and_down_stops_exactly_its_pids(tmp_path: Path) -> None:
    before = _children()
    ports = free_ports()
    net = devnet.up(tmp_path / "dn", ports, accounts=3)
    try:
        state = json.loads((tmp_path / "dn" / "devnet.json").read_text())
        assert state["rpc_url"] == f"http://127.0.0.1:{ports.anvil}" and state["chain_id"] == 31337
        assert state["ipfs_api"] == f"/ip4/127.0.0.1/tcp/{ports.ipfs_api}/http"
        pids = [d["pid"] for d in state["daemons"]]
        assert len(pids) == 2 and all(procs.alive(p) for p in pids)
        client = chain.connect(net.rpc_url, chain.Deployment.from_json(net.deployment))
        assert client.concord.token() == client.token.address
        assert [client.token.balance_of(a) for a in net.accounts] == [devnet.DEVNET_MINT] * 3
        store = Store(net.ipfs_api, None, timeout=5.0)
        assert store.get_bytes(store.put_file(b"x", name="x"), max_bytes=10) == b"x"
        assert state["block_time"] == devnet.DEFAULT_BLOCK_TIME and list(state["peers"]) == ["initiator"]
        assert [d["name"] for d in state["daemons"]] == ["anvil", "ipfs"]
        with pytest.raises(devnet.DevnetRunning):
            devnet.up(tmp_path / "dn", free_ports())
    finally:
        stopped = devnet.down(tmp_path / "dn")
    assert sorted(stopped) == sorted(pids)
    assert not any(procs.alive(p) for p in pids)
    assert _children() == before
    assert not (tmp_path / "dn" / "devnet.json").exists()


def test_busy_anvil_port_is_one_line_error_and_nothing_runs(tmp_path: Path, listener: int) -> None:
    before = _children()
    ports = devnet.Ports(listener, procs.free_port(), procs.free_port(), procs.free_port())
    with pytest.raises(procs.PortBusy) as exc:
        devnet.up(tmp_path / "dn", ports)
    msg = str(exc.value)
    assert "\n" not in msg and str(listener) in msg and "--anvil-port" in msg
    assert _children() == before


def test_busy_ipfs_port_stops_the_anvil_already_started(tmp_path: Path, listener: int) -> None:
    before = _children()
    ports = devnet.Ports(procs.free_port(), listener, procs.free_port(), procs.free_port())
    with pytest.raises(procs.PortBusy) as exc:
        devnet.up(tmp_path / "dn", ports)
    assert "--ipfs-port" in str(exc.value)
    assert not procs.port_busy(ports.anvil)  # the anvil that was up is gone
    assert _children() == before
    assert not (tmp_path / "dn" / "devnet.json").exists()


def test_cli_reports_busy_port_in_one_line(tmp_path: Path, listener: int, capsys: pytest.CaptureFixture) -> None:
    rc = devnet.main(["up", "--state-dir", str(tmp_path / "dn"), "--anvil-port", str(listener)])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and err.count("\n") == 0 and err.startswith("error: port") and "--anvil-port" in err


def test_missing_binary_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(procs.MissingBinary) as exc:
        procs.find_binary("concord-no-such-daemon", [tmp_path / "nope"])
    assert "make deps" in str(exc.value) and "\n" not in str(exc.value)


def test_daemon_that_exits_at_start_is_reported_with_its_log(tmp_path: Path) -> None:
    before = _children()
    argv = [sys.executable, "-c", "import sys; print('bad flag --nope'); sys.exit(3)"]
    daemon, proc = procs.start("broken", argv, tmp_path / "broken.log")
    with pytest.raises(procs.DaemonDidNotStart) as exc:
        procs.wait_ready(daemon, proc, lambda: False, timeout=10)
    assert "exited early" in str(exc.value) and "bad flag --nope" in str(exc.value)
    procs.stop(daemon)
    assert _children() == before


def test_daemon_that_never_gets_ready_times_out_and_is_stopped(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "import time; time.sleep(60)"]
    daemon, proc = procs.start("sleeper", argv, tmp_path / "sleeper.log")
    with pytest.raises(procs.DaemonDidNotStart) as exc:
        procs.wait_ready(daemon, proc, lambda: False, timeout=0.5)
    assert "not ready" in str(exc.value)
    assert procs.stop(daemon) is True and not procs.alive(daemon.pid)


def test_stop_ignores_a_recycled_pid(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "import time; time.sleep(60)"]
    daemon, _ = procs.start("sleeper", argv, tmp_path / "s.log")
    impostor = procs.Daemon(daemon.name, daemon.pid, daemon.start_ticks + 1, daemon.argv, daemon.log_path)
    assert procs.stop(impostor) is False and procs.alive(daemon.pid)  # not the process we started
    assert procs.stop(daemon) is True and not procs.alive(daemon.pid)


@pytest.mark.slow
def test_the_chain_runs_on_a_clock_and_every_node_gets_a_peer_in_a_mesh(tmp_path: Path) -> None:
    """No transaction: the block number and timestamp still move (deadlines pass); a transaction is
    still mined at once. Peers of `up(peers=...)` and of `add_peers` are one mesh: what one node puts
    on its own peer, another node's peer fetches; `down` stops every one of them."""
    before = _children()
    state = tmp_path / "dn"
    net = devnet.up(state, free_ports(), accounts=2, block_time=2, peers=["trainer-1"])
    try:
        client = chain.connect(net.rpc_url, chain.Deployment.from_json(net.deployment))
        b0, t0 = client.rpc.block_number(), client.rpc.block_timestamp()
        wait_until = time.monotonic() + 15
        while client.rpc.block_number() < b0 + 2 and time.monotonic() < wait_until:
            time.sleep(0.1)
        assert client.rpc.block_number() >= b0 + 2 and client.rpc.block_timestamp() >= t0 + 2  # no transaction sent
        t = time.monotonic()  # just after an interval block: the next one is ~2 s away
        client.token.transfer(client.signer(keys.devnet_account(0)), net.accounts[1], 1)
        assert time.monotonic() - t < 1.2  # mined at once (mixed mining), not at the next tick

        net = devnet.add_peers(state, ["trainer-1", "validator-1"])  # trainer-1 has one: only validator-1 is new
        assert list(net.peers) == ["initiator", "trainer-1", "validator-1"]
        assert devnet.load(state).peers == net.peers and len(net.daemons) == 4
        trainer, validator, initiator = (net.peer(n) for n in ("trainer-1", "validator-1", "initiator"))
        assert len({trainer.api, validator.api, initiator.api}) == 3
        for p in (trainer, validator, initiator):
            others = {q.peer_id for q in (trainer, validator, initiator) if q is not p}
            assert others <= set(devnet.swarm_peers(p.api_url))
        digest = Store(trainer.api, None).put_manifest(canonical_bytes({"from": "trainer-1"}))
        assert Store(validator.api, None, timeout=10.0).get_manifest(digest) == canonical_bytes({"from": "trainer-1"})
        with pytest.raises(devnet.NoPeer, match="validator-9"):
            net.peer("validator-9")
    finally:
        stopped = devnet.down(state)
    assert len(stopped) == 4 and _children() == before


def test_block_time_flag() -> None:
    assert devnet.parser().parse_args(["up"]).block_time == devnet.DEFAULT_BLOCK_TIME
    assert devnet.parser().parse_args(["up", "--block-time", "0"]).block_time is None
    assert devnet.parser().parse_args(["up", "--block-time", "0.25"]).block_time == 0.25
    for bad in ("-1", "nan", "soon"):
        with pytest.raises(SystemExit):
            devnet.parser().parse_args(["up", "--block-time", bad])


# ----------------------------------------------------------------------------- `devnet up --netns`

NETNS_REFUSED = netns.available()
needs_netns = pytest.mark.skipif(NETNS_REFUSED is not None, reason=str(NETNS_REFUSED))


def _netns_left(tag: str) -> list[str]:
    """Namespaces and links (veths, the bridge) of ``tag`` that still exist."""
    ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    links = subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True, check=True).stdout
    names = [line.split()[0] for line in ns.splitlines() if line.strip()]
    names += [str(link["ifname"]) for link in json.loads(links)]
    return [n for n in names if n.startswith(tag)]


def _in_netns(ns: str, code: str, *args: str) -> str:
    """Python ``code`` run inside namespace ``ns``; its stdout."""
    argv = ["ip", "netns", "exec", ns, sys.executable, "-c", code, *args]
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=30).stdout


POST = (
    "import sys, urllib.request; r = urllib.request.Request(sys.argv[1], data=sys.argv[2].encode(), "
    "headers={'Content-Type': 'application/json'}); print(urllib.request.urlopen(r, timeout=10).read().decode())"
)


@needs_netns
@pytest.mark.slow
def test_up_netns_puts_each_peer_in_its_own_limited_namespace_and_down_removes_them(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    before = _children()
    state = tmp_path / "dn"
    flags = ["--state-dir", str(state), "--anvil-port", str(procs.free_port()), "--accounts", "2"]
    rc = devnet.main(["up", "--netns", *flags, "--peer", "trainer-1", "--peer", "validator-1"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    net = devnet.load(state)
    tag = net.netns
    try:
        assert tag.startswith(netns.TAG_PREFIX) and f"namespace {tag}-trainer-1" in out.out
        assert list(net.peers) == ["initiator", "trainer-1", "validator-1"]
        trainer, validator, initiator = (net.peer(n) for n in ("trainer-1", "validator-1", "initiator"))
        assert [p.netns for p in (trainer, validator, initiator)] == [
            f"{tag}-{p.name}" for p in (trainer, validator, initiator)
        ]
        assert len({p.api for p in (trainer, validator, initiator)}) == 3 and net.ipfs_api == initiator.api
        # each link limited both ways: a trainer's at 100 Mbit/s, a validator's at 1 Gbit/s (tbf on eth0 inside)
        for peer, rate in ((trainer, "100Mbit"), (validator, "1Gbit"), (initiator, "1Gbit")):
            qdisc = subprocess.run(
                ["tc", "-n", peer.netns, "qdisc", "show", "dev", "eth0"], capture_output=True, text=True
            )
            assert "tbf" in qdisc.stdout and f"rate {rate}" in qdisc.stdout, qdisc.stdout
        # from inside the trainer's namespace: the chain on the bridge, and the validator's peer across it
        call = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []})
        assert json.loads(_in_netns(trainer.netns, POST, net.rpc_url, call))["result"] == "0x7a69"
        assert (
            json.loads(_in_netns(trainer.netns, POST, f"{validator.api_url}/api/v0/id", ""))["ID"] == validator.peer_id
        )
        client = chain.connect(net.rpc_url, chain.Deployment.from_json(net.deployment))  # and from the root one
        assert client.token.balance_of(net.accounts[1]) == devnet.DEVNET_MINT
        # what the trainer puts on its own peer, the validator's peer fetches over the bridge (bitswap)
        data = os.urandom(200_000)
        ref = Store(trainer.api, None, timeout=20.0).put_file(data, name="x.bin")
        got = Store(validator.api, None, timeout=20.0).get_file(ref, tmp_path / "x.bin", len(data))
        assert got.read_bytes() == data
        pids = [d.pid for d in net.daemon_list()]
        assert len(pids) == 4 and all(procs.alive(p) for p in pids)  # anvil + 3 peers, handed over to the state file
        with pytest.raises(devnet.ProcError, match="peers are all started by `up`"):
            devnet.add_peers(state, ["trainer-2"])
    finally:
        rc = devnet.main(["down", "--state-dir", str(state)])
    assert rc == 0
    assert _netns_left(tag) == [] and tag not in netns.tags()  # namespaces, veths (their qdiscs) and bridge
    assert not any(procs.alive(p) for p in pids)
    assert _children() == before and not devnet.state_file(state).exists()


@needs_netns
def test_up_netns_refuses_a_peer_name_no_namespace_can_have_before_starting_anything(tmp_path: Path) -> None:
    before, tags = _children(), set(netns.tags())
    with pytest.raises(devnet.ProcError, match="'trainer 1'.*letters, digits"):
        devnet.up(tmp_path / "dn", free_ports(), accounts=2, peers=["trainer 1"], use_netns=True)
    assert _children() == before and set(netns.tags()) <= tags
    assert not devnet.state_file(tmp_path / "dn").exists()


@needs_netns
@pytest.mark.slow
def test_sigterm_during_up_netns_leaves_no_namespace_veth_or_daemon(tmp_path: Path) -> None:
    state = tmp_path / "dn"
    name = f"sig{secrets.token_hex(3)}"  # a peer name no other run uses: finds this run's namespaces
    code = "import sys; from scripts import devnet; sys.exit(devnet.main(sys.argv[1:]))"
    argv = [sys.executable, "-c", code, "up", "--netns", "--state-dir", str(state), "--accounts", "2"]
    argv += ["--anvil-port", str(procs.free_port()), "--peer", name]
    proc = subprocess.Popen(argv, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tag = ""
    try:
        deadline = time.monotonic() + 60
        while not tag and time.monotonic() < deadline and proc.poll() is None:
            mine = [ns for ns in netns._netns_names() if ns.endswith(f"-{name}")]
            # its namespaces made and its peers starting: mid-`up`
            if mine and (state / "ipfs" / f"{name}.log").exists():
                tag = mine[0].split("-", 1)[0]
            time.sleep(0.05)
        assert tag, f"no namespace for {name} appeared: {proc.poll()}"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 130
        assert "interrupted (SIGTERM)" in (proc.stdout.read() if proc.stdout else "")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert _netns_left(tag) == []
    assert not devnet.state_file(state).exists()
    assert _running_with(str(state)) == []  # no anvil, no Helia peer


def _running_with(text: str) -> list[int]:
    """Live processes whose command line contains ``text``."""
    out = []
    for pid in procs.live_processes():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            out.append(pid)
    return out
