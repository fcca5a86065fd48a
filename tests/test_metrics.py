"""Nodes' Prometheus metrics (`--metrics-port`, client/runtime/metrics.py).

- e2e: on a devnet of its own, an honest trainer, a cheating trainer (`inflated_rewards`) and a
  validator run as processes with --metrics-port; while they run, their /metrics endpoints are
  scraped over HTTP and parsed with prometheus-client's own parser: the validator counts an
  accepted and a rejected verdict (with the check it failed), the rounds settled, the fee and
  bounty the chain paid it and its verification seconds; the cheater counts its slash, the honest
  trainer its reward and its generation and training seconds.
- unit: the feeds (log events, Display updates, ticks, timing spans) land in the right series.
- bad input: a taken port raises NodeConfigError naming --metrics-port (the CLI's one line, exit 1);
  a port out of range is argparse's exit 2.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, replace

import pytest
from own_devnet import TASK_FILE, free_ports
from prometheus_client.parser import text_string_to_metric_families

from concord.client import chain, timing
from concord.client.chain import EventMeta, Role, keys
from concord.client.content.store import Store
from concord.client.initiator import load_task_file, publish_task
from concord.client.runtime import procs
from concord.client.runtime.config import NodeConfigError
from concord.client.runtime.display import Display, fields
from concord.client.runtime.events import Tick
from concord.client.runtime.metrics import NodeMetrics
from scripts import REPO_ROOT, devnet
from scripts.harness import enrol, node_command

# The task could run 40 rounds; the nodes are stopped once round 0 is settled and paid, scraped alive.
# (With 3, a fast machine ran all three in 1.2 s: the trainer exited 0.4 s after its reward, before a
# scrape saw it.)
ROUNDS = 40


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """/metrics parsed: (sample name, sorted labels) -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@dataclass(frozen=True)
class NodeRun:
    name: str
    role: Role
    account: int
    cheat: str | None
    port: int


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, dict]]:
    """Each node's last scrape, taken once the validator has settled a round and verified the next."""
    state = tmp_path_factory.mktemp("metrics-net")
    net = devnet.up(state, free_ports())
    started: list[procs.Daemon] = []
    try:
        client = chain.connect(net.rpc_url, chain.Deployment.from_json(net.deployment))
        task_file = load_task_file(TASK_FILE)
        params = replace(task_file.params, max_rounds=ROUNDS)
        task_file = replace(task_file, params=params, budget=params.per_round * ROUNDS)
        initiator = client.signer(keys.devnet_account(0))
        store = Store(net.ipfs_api, state / "cache", timeout=10.0)
        task_id = publish_task(client, initiator, store, task_file, str(TASK_FILE)).task_id
        nodes = [
            NodeRun("trainer", Role.TRAINER, 1, None, procs.free_port()),
            NodeRun("cheater", Role.TRAINER, 2, "inflated_rewards", procs.free_port()),
            NodeRun("validator", Role.VALIDATOR, 3, None, procs.free_port()),
        ]
        for n in nodes:
            stake = params.min_trainer_stake if n.role == Role.TRAINER else params.min_validator_stake
            enrol(client, n.account, n.role, stake, task_id)
        for n in nodes:
            if n.role == Role.TRAINER:
                module = "scripts.adversaries.trainer" if n.cheat else "concord.client.trainer"
                extra = ["--threads", "1", *(["--cheat", n.cheat] if n.cheat else [])]
            else:
                module, extra = "concord.validator.node", []
            argv = node_command(
                module, ("--devnet", str(devnet.state_file(state))), task_id, n.account, state / n.name, ROUNDS, 0.05
            )
            daemon, _ = procs.start(
                n.name, [*argv, *extra, "--metrics-port", str(n.port)], state / f"{n.name}.log", cwd=REPO_ROOT
            )
            started.append(daemon)
        last: dict[str, dict] = {}
        deadline = time.monotonic() + 420  # round 0 settles in ~15 s alone; a loaded CI machine took over 180 s once
        while time.monotonic() < deadline:
            for n in nodes:
                try:
                    last[n.name] = scrape(n.port)
                except OSError:
                    continue  # not serving yet, or exited after its last round
            v = last.get("validator", {})
            if (
                value(v, "concord_rounds_settled_total", outcome="finalized") >= 1
                and value(last.get("trainer", {}), "concord_paid_tokens_total", kind="reward") > 0
                and value(last.get("cheater", {}), "concord_slashed_tokens_total") > 0
            ):
                break
            time.sleep(0.5)
        yield last
    finally:
        procs.stop_all(started)
        devnet.down(state)


@pytest.mark.slow
@pytest.mark.e2e
def test_running_nodes_serve_their_metrics(scraped: dict[str, dict]) -> None:
    v, t, c = scraped["validator"], scraped["trainer"], scraped["cheater"]
    assert value(v, "concord_node_info", role="validator") == 1
    assert value(v, "concord_rounds_settled_total", outcome="finalized") >= 1
    assert value(v, "concord_verdicts_total", verdict="accepted", check="") >= 1
    rejected = {labels: x for (name, labels), x in v.items() if name == "concord_verdicts_total" and x > 0}
    assert any(dict(labels)["verdict"] == "rejected" and dict(labels)["check"] for labels in rejected), rejected
    assert value(v, "concord_paid_tokens_total", kind="fee") > 0
    assert value(v, "concord_paid_tokens_total", kind="bounty") > 0
    assert value(v, "concord_time_seconds_total", category="verification") > 0
    assert value(v, "concord_head_block") > 0

    assert value(t, "concord_node_info", role="trainer") == 1
    assert value(t, "concord_submissions_total") >= 1
    assert value(t, "concord_paid_tokens_total", kind="reward") > 0
    assert value(t, "concord_slashed_tokens_total") == 0
    assert value(t, "concord_time_seconds_total", category="generation") > 0
    assert value(t, "concord_time_seconds_total", category="training") > 0
    assert 0 <= value(t, "concord_mean_reward") <= 1

    assert value(c, "concord_slashed_tokens_total") > 0
    assert value(c, "concord_paid_tokens_total", kind="reward") == 0


@pytest.mark.unit
def test_the_feeds_land_in_their_series(monkeypatch: pytest.MonkeyPatch) -> None:
    # the listeners are process-wide: this test's go away with it (timing back to off, too)
    from concord.client.runtime import display, events

    monkeypatch.setattr(display, "_update_listeners", [])
    monkeypatch.setattr(events, "_tick_listeners", [])
    monkeypatch.setattr(timing, "_listeners", [])
    monkeypatch.setattr(timing, "_recorder", None)
    monkeypatch.setattr(timing, "_checked", False)
    monkeypatch.delenv(timing.ENV, raising=False)
    m = NodeMetrics("trainer")
    handler_count = len(logging.getLogger().handlers)
    m.attach()
    try:
        port = m.serve("127.0.0.1", 0)
        me = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
        log = logging.getLogger("concord.trainer")
        log.setLevel(logging.INFO)
        log.info("start", extra=fields(event="started", address=me))
        log.info("prepared", extra=fields(event="prepared", mean_reward=0.25))
        log.info("submitted", extra=fields(event="submitted", round=0))
        with Display("t", json_logs=True) as d:
            d.update(round=3, phase="COMMIT")
        meta = EventMeta(7, "0x" + "00" * 32, 0)
        m.on_tick(
            Tick(
                7,
                0,
                (
                    chain.SubmissionRewarded(meta, 1, 0, me, 0, 4800 * 10**18 + 1),  # a float of base units: 4.8e21
                    chain.SubmissionRewarded(meta, 2, 0, me, 0, 10**18 // 2 - 1),
                    chain.SubmissionRewarded(meta, 1, 0, "0x" + "11" * 20, 1, 999),  # someone else's
                    chain.RoundFinalized(meta, 1, 0, b"\x00" * 32, False, 10, 0),
                ),
            )
        )
        with timing.span("generation"):
            time.sleep(0.01)
        s = scrape(port)
    finally:
        m.close()
        for h in logging.getLogger().handlers[handler_count:]:
            logging.getLogger().removeHandler(h)
    assert value(s, "concord_events_total", event="prepared") == 1
    assert value(s, "concord_submissions_total") == 1
    assert value(s, "concord_mean_reward") == 0.25
    assert value(s, "concord_round") == 3
    assert value(s, "concord_phase", phase="commit") == 1 and value(s, "concord_phase", phase="submit") == 0
    assert value(s, "concord_paid_tokens_total", kind="reward") == 4800.5  # whole tokens, from the exact sum
    assert m.paid_units["reward"] == 4800 * 10**18 + 10**18 // 2  # the exact integer kept by the node
    assert value(s, "concord_rounds_settled_total", outcome="finalized") == 1
    assert value(s, "concord_head_block") == 7
    assert value(s, "concord_time_seconds_total", category="generation") >= 0.01


@pytest.mark.unit
def test_a_taken_or_bad_metrics_port_names_the_flag() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(NodeConfigError, match=r"--metrics-port: cannot serve on 127.0.0.1:\d+"):
            NodeMetrics("validator").serve("127.0.0.1", taken.getsockname()[1])
    done = subprocess.run(
        [sys.executable, "-m", "concord.client.trainer", "run", "--task", "1", "--metrics-port", "70000"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "--metrics-port" in done.stderr and "Traceback" not in done.stderr, done.stderr
