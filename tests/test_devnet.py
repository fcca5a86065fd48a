"""Devnet up/down against the real daemons: what up writes, that down stops exactly those PIDs,
and that a busy port, a missing binary or a daemon that dies gives one clear line and leaves
nothing running. Also: the js-ipfs fixture stores and returns a block."""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import ipfshttpclient
import pytest
from own_devnet import free_ports

from concord.client import chain
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
        assert (
            ipfshttpclient.Client(net.ipfs_api, timeout=10).cat(
                ipfshttpclient.Client(net.ipfs_api, timeout=10).add_bytes(b"x")
            )
            == b"x"
        )
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
