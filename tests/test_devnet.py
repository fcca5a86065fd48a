"""Devnet up/down against the real daemons: what up writes, that down stops exactly those PIDs,
and that a busy port, a missing binary or a daemon that dies gives one clear line and leaves
nothing running; the chain's clock (blocks without transactions) and the IPFS peers' mesh
(one per node, added peers recorded and stopped by down). Also: the js-ipfs fixture stores and
returns a block."""

from __future__ import annotations

import json
import os
import socket
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
from scripts import devnet


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
