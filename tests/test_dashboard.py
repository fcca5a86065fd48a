"""`concord dashboard` in a real browser (issue 14, onlookers): a devnet of its own plays 2 rounds with a
cheating trainer (`inflated_rewards`), one honest trainer and one validator (scripts.demo.run_network,
as tests/test_network.py); then the dashboard runs as a user starts it (`python -m concord.client.cli
dashboard`, behind a JSON-RPC proxy that records every eth_getLogs range) and headless Chromium
(tests/browser.py, DevTools protocol) loads the page.

- The rendered page (after its JavaScript ran) shows the task's terms and spec, the rounds on the
  timeline, the reward curve with the demo's own numbers, the cheater's rejected verdicts with the
  check the validator failed it on and the numbers, its slashes and the validator's bounties.
- New blocks appear without a reload: a trainer adds 2.5 tokens of stake and the page's head and the
  trainer's stake move while a marker set in the page's window survives.
- The index never rescans: the eth_getLogs ranges the dashboard asked for are contiguous, the
  deployment block is asked for once, and a new block costs one range that starts after the last.
A screenshot of the page is saved under the test's tmp dir (the path is printed).
"""

from __future__ import annotations

import json
import re
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from browser import Chromium, RpcLog, rpc_proxy
from own_devnet import TASK_FILE, NetworkRun, network_run

from concord.client.chain import Role, keys
from concord.client.runtime import procs
from concord.client.units import format_amount
from scripts import REPO_ROOT
from scripts.demo import NetworkPlan, demo_nodes

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

ROUNDS = 2
TOKEN = 10**18
ADDED = 5 * TOKEN // 2  # 2.5 tokens: the page must show it exactly


@dataclass(frozen=True)
class Board:
    run: NetworkRun
    url: str
    rpc_log: RpcLog
    page: Chromium
    artifacts: Path

    @property
    def task_id(self) -> int:
        return self.run.outcome.task_id

    def state(self) -> dict:
        with urllib.request.urlopen(self.url + "api/state", timeout=10) as resp:
            return json.load(resp)


def start_dashboard(argv: list[str], log: Path, timeout: float = 60.0) -> tuple[procs.Daemon, str]:
    """`concord dashboard ARGV` as a process of its own; (its daemon, the URL it printed)."""
    log.unlink(missing_ok=True)  # the URL is read from it
    argv = [sys.executable, "-m", "concord.client.cli", "dashboard", *argv]
    daemon, proc = procs.start("dashboard", argv, log, cwd=REPO_ROOT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(r"dashboard: (http://\S+/)", log.read_text() if log.exists() else "")
        if found:
            return daemon, found.group(1)
        if proc.poll() is not None:
            raise AssertionError(f"dashboard exited with {proc.returncode}: {procs.log_tail(log, 10)}")
        time.sleep(0.1)
    procs.stop(daemon)
    raise AssertionError(f"the dashboard printed no URL in {timeout:.0f}s: {procs.log_tail(log, 10)}")


@pytest.fixture(scope="module")
def board(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Board]:
    state = tmp_path_factory.mktemp("dashboard-net")
    plan = NetworkPlan(
        TASK_FILE, ROUNDS, demo_nodes(honest=1, cheat="inflated_rewards", validators=1), timeout_s=150.0, live=False
    )
    with network_run(state, plan) as run, rpc_proxy(run.net.rpc_url) as (proxy_url, rpc_log):
        tmp = tmp_path_factory.mktemp("dashboard")
        dep = run.client.deployment.save(tmp / "deployment.json")
        argv = [
            *("--rpc-url", proxy_url, "--deployment", str(dep), "--ipfs-api", run.net.ipfs_api),
            *("--validator-state", str(state / "nodes" / "validator-1"), "--port", "0", "--poll-interval", "0.2"),
        ]
        daemon, url = start_dashboard(argv, tmp / "dashboard.log")
        try:
            with Chromium(url, tmp) as page:
                page.wait_for("window.concordDashboard && window.concordDashboard.renders > 0", what="a first render")
                yield Board(run, url, rpc_log, page, tmp)
        finally:
            procs.stop(daemon)


RENDERED = """(() => {
  const q = (s) => [...document.querySelectorAll(s)];
  const t = (s) => (document.querySelector(s) || {}).innerText || "";
  return {
    terms: t('#task-1-terms'), spec: t('#task-1-spec'), budget: t('#task-1-budget'),
    rounds: q('#task-1-timeline g.round-row').map((g) => [Number(g.dataset.round), g.dataset.phase,
      g.querySelectorAll('rect').length]),
    points: q('#task-1-rewards circle.pt').map((c) => [Number(c.dataset.round), Number(c.dataset.reward)]),
    rejectedMarks: q('#task-1-rewards g.rej').length,
    subs: q('#task-1-submissions tbody tr').map((tr) => ({verdict: tr.dataset.verdict, text: tr.innerText,
      trainer: tr.querySelector('code').title,
      checks: [...tr.querySelectorAll('.evidence-doc')].map((d) => d.dataset.check)})),
    money: q('#task-1-money tbody tr').map((tr) => ({kind: tr.dataset.kind, text: tr.innerText})),
    nodes: q('#task-1-nodes tbody tr').map((tr) => tr.innerText),
    head: Number(t('#head-block')), conservation: t('#conservation'),
  };
})()"""


def published_checks(state_dir: Path, task_id: int) -> dict[tuple[int, int], str]:
    """(round, index) -> the check the validator failed each rejected submission on (its verdict files)."""
    out = {}
    for path in (state_dir / "nodes" / "validator-1" / f"task-{task_id}" / "verdicts").glob("r*-i*.json"):
        v = json.loads(path.read_text())
        if not v["accepted"]:
            out[(v["round"], v["index"])] = v["failed_check"]
    return out


def test_rendered_page_shows_terms_rounds_verdicts_evidence_and_slashes(board: Board) -> None:
    page = board.page.evaluate(RENDERED)
    shot = board.page.screenshot(board.artifacts / "dashboard.png")
    print(f"dashboard screenshot: {shot}")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000

    # terms (tokens, from the task file) and the spec read from IPFS by its digest
    assert re.search(r"trainer reward / round\s+300 CDT\b", page["terms"]), page["terms"]  # whole tokens, symbol
    assert re.search(r"slash per rejected submission\s+80\b", page["terms"])
    assert re.search(r"bounty share of a slash\s+50\.00 %", page["terms"])
    assert "env_id=sort" in page["spec"] and "inner_steps=2" in page["spec"], page["spec"]
    assert re.search(rf"rounds settled\s+{ROUNDS} of {ROUNDS}", page["budget"]), page["budget"]

    # the timeline: every round drawn, settled, with its phases as segments
    assert [(r, phase) for r, phase, _ in page["rounds"]] == [(r, "finalized") for r in range(ROUNDS)]
    assert all(segments >= 3 for _, _, segments in page["rounds"]), page["rounds"]

    # the reward curve: the demo's own per-round means (accepted submissions), the cheater's claims as marks
    curve = board.run.outcome.curve
    assert [r for r, _ in page["points"]] == list(range(ROUNDS))
    assert [round(v, 6) for _, v in page["points"]] == [round(v, 6) for v in curve]  # type: ignore[arg-type]
    assert page["rejectedMarks"] == ROUNDS

    # verdicts: the cheater rejected each round, with the check its validator published and the numbers
    cheater = next(s.address for s in board.run.plan.nodes if s.cheat)
    rejected = [s for s in page["subs"] if s["verdict"] == "rejected"]
    accepted = [s for s in page["subs"] if s["verdict"] == "accepted"]
    assert len(rejected) == ROUNDS and len(accepted) == ROUNDS, page["subs"]
    assert {s["trainer"] for s in rejected} == {cheater}
    checks = set(published_checks(Path(board.run.net.state_dir), board.task_id).values())
    assert checks and {c for s in rejected for c in s["checks"]} == checks
    for s in rejected:
        assert f"{s['checks'][0]} failed" in s["text"] and "claimed_mean" in s["text"], s["text"]
        assert "(ipfs)" in s["text"]  # the evidence document was read from IPFS by its digest
        assert "\u221280" in s["text"]  # slashed 80 tokens

    # slashes, bounties and fees; nodes; the header
    kinds = [m["kind"] for m in page["money"]]
    assert kinds.count("slash") == ROUNDS and kinds.count("bounty") == ROUNDS and kinds.count("fee") == ROUNDS
    assert all("\u221280" in m["text"] for m in page["money"] if m["kind"] == "slash")
    assert all("+40" in m["text"] for m in page["money"] if m["kind"] == "bounty")
    assert len(page["nodes"]) == 3
    assert page["conservation"] == "holds"
    # the header's head follows the chain's (blocks keep coming: it reaches the API's head and never passes it)
    head = board.state()["head_block"]
    board.page.wait_for(f"Number(document.querySelector('#head-block').textContent) >= {head}", what=f"block {head}")
    shown = board.page.evaluate("Number(document.querySelector('#head-block').textContent)")
    assert head <= shown <= board.state()["head_block"], (head, shown)


def test_new_blocks_appear_without_a_reload(board: Board) -> None:
    """The honest trainer adds 2.5 tokens of stake: the page's head moves and the trainer's row shows the new
    stake, exact, without a reload. (A top-up is no longer possible here: every round of the task has
    opened, NoFurtherRounds.)"""
    page = board.page
    page.evaluate("window.__sameDocument = 'yes'")  # a reload would drop it
    before = page.evaluate("window.concordDashboard.renders")
    client = board.run.client
    node = next(s for s in board.run.plan.nodes if s.role == Role.TRAINER and s.cheat is None)
    row = next(n for n in board.state()["tasks"][0]["nodes"] if n["address"] == node.address)
    stake = int(row["stake"])  # amounts: exact decimal strings of base units
    signer = client.signer(keys.devnet_account(node.account))
    client.token.approve(signer, client.concord.address, ADDED)
    receipt = client.concord.add_stake(signer, ADDED)
    page.wait_for(
        f"Number(document.querySelector('#head-block').textContent) >= {receipt.block_number}",
        what=f"the head to reach block {receipt.block_number}",
    )
    nodes = page.evaluate("document.querySelector('#task-1-nodes').innerText").splitlines()
    shown = [line.split("\t") for line in nodes if "\ttrainer\t" in line]
    assert [format_amount(stake + ADDED, 18, "CDT")] in [[cells[3].strip()] for cells in shown], nodes
    assert page.evaluate("window.__sameDocument") == "yes"
    assert page.evaluate("window.concordDashboard.renders") > before


def test_the_index_fetches_each_block_once(board: Board) -> None:
    client = board.run.client
    deployed = client.deployment.block_number
    client.rpc.call("evm_mine")
    head = client.rpc.block_number()
    board.page.wait_for(f"window.concordDashboard.head >= {head}", what=f"the page to reach block {head}")
    ranges = list(board.rpc_log.get_logs)
    assert ranges[0][0] == deployed
    assert [a for a, _ in ranges].count(deployed) == 1, ranges  # the deployment block asked for once
    for (_, prev_end), (start, end) in zip(ranges, ranges[1:], strict=False):
        assert start == prev_end + 1 and end >= start, ranges  # contiguous: no block asked for twice
    assert ranges[-1][1] >= head
    doc = board.state()
    assert doc["index"]["resets"] == 0 and doc["index"]["from_block"] == deployed
    assert doc["index"]["log_requests"] == len(board.rpc_log.get_logs)


def test_settled_rounds_from_events_match_the_views(board: Board) -> None:
    """The document takes a settled round's phase and next model from its RoundFinalized event (no view
    per old round on each refresh): the same values the contract's roundInfo view returns."""
    c = board.run.client.concord
    doc = board.state()
    (task,) = doc["tasks"]
    for r in task["rounds"]:
        info = c.round_info(board.task_id, r["round"])
        assert r["phase"] == info.phase.name.lower()
        assert r["next_model"] == "0x" + info.next_model_digest.hex()
    assert [x["mean"] for x in task["rewards"]] == list(board.run.outcome.curve)


LIVE = "document.getElementById('live').className + ' | ' + document.getElementById('live-text').textContent"


def test_a_chain_that_stops_answering_shows_as_stale(board: Board) -> None:
    """Last (it takes the proxy down for a while): the dot is live, turns stale while the chain's refreshes
    fail (the page keeps its last document and says which block it shows), and live again after."""
    page = board.page
    page.wait_for(f"({LIVE}).startsWith('live ok')", what="a live dot")
    board.rpc_log.down = True
    try:
        stale = page.wait_for(f"({LIVE}).startsWith('live stale') && ({LIVE})", timeout=90, what="a stale dot")
        assert "stale" in stale and "showing block" in stale, stale
        assert board.state()["error"], "the document says the refresh failed"
    finally:
        board.rpc_log.down = False
    page.wait_for(f"({LIVE}).startsWith('live ok')", timeout=90, what="the dot live again")
