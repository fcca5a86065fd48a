"""`make demo` (chain-only until the nodes exist): devnet up, one settled round, devnet down."""

from __future__ import annotations

from pathlib import Path

import pytest

from client.runtime import procs
from scripts import devnet
from scripts import harness as settle_demo


@pytest.mark.slow
def test_demo_settles_a_round_with_one_slashed_cheater_and_stops_the_devnet(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ports = devnet.Ports(procs.free_port(), procs.free_port(), procs.free_port(), procs.free_port())
    cons = settle_demo.run_demo(tmp_path / "dn", ports)
    out = capsys.readouterr().out
    assert cons.holds and cons.escrow == 0 and cons.credited == 0
    assert cons.token_balance == cons.staked == (3 * 100 - 80 + 3 * 120) * settle_demo.TOKEN
    assert "trainer 3 (cheater)" in out and "→ holds" in out
    assert "trainer rewards 300.00 · slashed 80.00 · bounty to rejecting validators 40.00" in out
    assert not procs.port_busy(ports.anvil) and not procs.port_busy(ports.ipfs_api)
    assert not (tmp_path / "dn" / "devnet.json").exists()
