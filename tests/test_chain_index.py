"""The incremental event index (client/runtime/index.py) against a real Anvil, and `concord dashboard`'s
bad input: each refresh asks eth_getLogs only for the blocks after the last one indexed; a refresh
without new blocks asks nothing; a reorganisation under the index is noticed and re-indexed once;
`concord status` gives the same document with a shared index as with a fresh one."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from task_terms import CHAIN_PARAMS, TOKEN

from concord.client import chain, status
from concord.client.runtime.index import ChainIndex
from scripts import REPO_ROOT

BUDGET = 1_000 * TOKEN


def test_each_refresh_fetches_only_the_new_blocks(chain_env) -> None:
    client = chain_env.client
    index = ChainIndex(client)
    index.refresh()
    first_head = index.last_block
    assert [(r.from_block, r.to_block) for r in index.ranges] == [(client.deployment.block_number, first_head)]
    before = len(index.events)

    assert index.refresh() == [] and len(index.ranges) == 1  # no new block: no request
    task_id = chain_env.create_task(chain_env.signer(0), CHAIN_PARAMS, BUDGET)
    new = index.refresh()
    assert index.ranges[-1].from_block == first_head + 1 and index.ranges[-1].to_block == index.last_block
    created = [e for e in new if isinstance(e, chain.TaskCreated)]
    assert [e.task_id for e in created] == [task_id]
    assert len(index.events) == before + len(new)
    assert [e.task_id for e in index.events if isinstance(e, chain.TaskCreated)].count(task_id) == 1
    starts = [r.from_block for r in index.ranges]
    assert starts.count(client.deployment.block_number) == 1 and index.resets == 0


def test_a_reorganisation_is_reindexed_once(chain_env) -> None:
    client = chain_env.client
    index = ChainIndex(client)
    index.refresh()
    snap = client.rpc.call("evm_snapshot")
    gone = chain_env.create_task(chain_env.signer(0), CHAIN_PARAMS, BUDGET)
    index.refresh()
    assert any(isinstance(e, chain.TaskCreated) and e.task_id == gone for e in index.events)
    orphaned = index.last_block
    client.rpc.call("evm_revert", snap)
    chain_env.warp(3600)  # other blocks (other timestamps) at the same heights
    chain_env.warp(3600)
    chain_env.warp(3600)
    assert client.rpc.block_number() >= orphaned
    index.refresh()
    assert index.resets == 1
    assert not any(isinstance(e, chain.TaskCreated) and e.task_id == gone for e in index.events)
    assert index.ranges[-1].from_block == client.deployment.block_number


def test_status_through_a_shared_index_equals_a_fresh_scan(chain_env) -> None:
    client = chain_env.client
    task_id = chain_env.create_task(chain_env.signer(0), CHAIN_PARAMS, BUDGET)
    shared = ChainIndex(client)
    assert status.status(client, [task_id], (), shared) == status.status(client, [task_id])
    requests = len(shared.ranges)
    status.status(client, [task_id], (), shared)
    assert len(shared.ranges) == requests  # nothing new on chain: no log request


def _dashboard(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "concord.client.cli", "dashboard", *argv],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("case", ["unknown-task", "taken-port"])
def test_dashboard_bad_input_is_one_line(chain_env, tmp_path: Path, case: str) -> None:
    dep = chain_env.client.deployment.save(tmp_path / "deployment.json")
    base = ["--rpc-url", chain_env.anvil.url, "--deployment", str(dep)]
    if case == "unknown-task":
        done = _dashboard([*base, "--task", "999", "--port", "0"])
        expected = "task 999"
    else:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            done = _dashboard([*base, "--port", str(taken.getsockname()[1])])
        expected = "--host/--port: cannot serve"
    assert done.returncode == 1, done.stderr
    errors = [x for x in done.stderr.splitlines() if x.startswith("error:")]
    assert len(errors) == 1 and expected in errors[0], done.stderr
    assert "Traceback" not in done.stderr and "dashboard: http" not in done.stdout
