"""The check seed made of validators' shares, against a real Anvil and the real contracts
(docs/PROTOCOL.md, "The check seed"): grinding the blocks after the submit phase closed does not move
it, a withheld share holds it only until shareEnd and is slashed, and ``seed_step`` drives it."""

from __future__ import annotations

from eth_abi import encode
from eth_utils import keccak
from task_terms import CHAIN_PARAMS, TOKEN

from concord.client import chain
from concord.client.chain import Phase, Role
from concord.client.runtime.seed import SeedWatch, commit_shares, reveal_shares, seed_step, wait_for_seed
from scripts.harness import conservation, digest

P = CHAIN_PARAMS
TRAINERS, VALIDATORS = (1, 2), (4, 5)
LOW64 = (1 << 64) - 1


def _closed_round(env) -> tuple[int, dict[str, bytes]]:
    """A task whose round 0 just closed early: both validators committed shares, both trainers
    submitted (the last submission anchors the round). Returns the task and the shares."""
    c = env.client.concord
    task_id = env.create_task(env.signer(0), P, 3 * P.per_round)
    for i in TRAINERS:
        env.enrol(env.signer(i), Role.TRAINER, 100 * TOKEN, task_id)
    for i in VALIDATORS:
        env.enrol(env.signer(i), Role.VALIDATOR, 100 * TOKEN, task_id)
    shares = commit_shares(c, [env.signer(i) for i in VALIDATORS], task_id, 0)
    for n, i in enumerate(TRAINERS):
        c.submit(env.signer(i), task_id, 0, 0, digest(f"bundle {n}"), digest(f"proof {n}"), 10)
    assert c.phase_of(task_id, 0) == Phase.COMMIT
    return task_id, shares


def _expected_seed(task_id: int, anchor: int, parent_hash: bytes, shares: list[bytes]) -> bytes:
    mix = (int.from_bytes(parent_hash, "big") & ~LOW64) | anchor
    for s in shares:
        mix ^= int.from_bytes(s, "big") & ~LOW64
    return keccak(encode(["uint256", "uint256", "uint256"], [task_id, 0, mix]))


def test_grinding_the_blocks_after_the_close_does_not_move_the_seed(chain_env) -> None:
    """What the issue did to the old seed (keccak of block A + 1's hash): try candidate blocks A + 1
    with snapshot/mine/revert, each with another timestamp, and keep the one whose sample suits.
    The block hash moves with every candidate; the seed, fixed from the shares and the block value
    of the close, does not."""
    env, rpc = chain_env, chain_env.client.rpc
    task_id, shares = _closed_round(env)
    anchor = env.client.concord.seed_info(task_id, 0).anchor_block
    assert anchor == rpc.block_number()  # the closing submission's block
    parent = bytes(rpc.w3.eth.get_block(anchor - 1)["hash"])
    seeds, next_hashes = set(), set()
    for k in range(6):
        snap = rpc.call("evm_snapshot")
        rpc.call("evm_setNextBlockTimestamp", hex(env.now() + 1 + 7 * k))
        rpc.call("evm_mine")  # candidate block A + 1
        for _ in range(k):
            rpc.call("evm_mine")
        next_hashes.add(bytes(rpc.w3.eth.get_block(anchor + 1)["hash"]))
        c = env.client.concord
        reveal_shares(c, [env.signer(i) for i in VALIDATORS], task_id, 0, shares)  # fresh signers: fresh nonces
        seeds.add(c.check_seed(task_id, 0))
        rpc.call("evm_revert", snap)
    assert len(next_hashes) == 6, "every candidate block A + 1 differs: the old seed would have moved"
    assert seeds == {_expected_seed(task_id, anchor, parent, [shares[env.signer(i).address] for i in VALIDATORS])}


def test_a_withheld_share_is_slashed_and_the_seed_fixed_at_share_end(chain_env) -> None:
    env = chain_env
    c, rpc = env.client.concord, env.client.rpc
    task_id, shares = _closed_round(env)
    v1, v2 = (env.signer(i) for i in VALIDATORS)
    info = c.seed_info(task_id, 0)
    reveal_shares(c, [v1], task_id, 0, shares)  # v2 withholds
    watch = SeedWatch()
    assert seed_step(c, rpc, v1, task_id, 0, watch) is None  # shares outstanding before shareEnd: no tx
    assert watch.sent_at_block == -1
    env.warp(info.share_end - env.now())
    block = rpc.block_number()
    seed = wait_for_seed(c, rpc, v1, task_id, 0)
    (fixed,) = c.events(block + 1, "latest", ["CheckSeedFixed"])
    slot1 = c.member_info(task_id, v1.address).validator_index
    assert (fixed.seed, fixed.shares_revealed) == (seed, 1 << slot1)
    parent = bytes(rpc.w3.eth.get_block(info.anchor_block - 1)["hash"])
    assert seed == _expected_seed(task_id, info.anchor_block, parent, [shares[v1.address]])

    words, model = chain.reject_words([], 2), digest("model 1")
    for v in (v1, v2):  # v2 commits and reveals its verdict: it is slashed for the share alone
        c.commit(v, task_id, 0, chain.commit_hash(task_id, 0, words, model, digest(v.address), v.address))
    for v in (v1, v2):
        c.reveal(v, task_id, 0, words, model, digest(v.address))
    block = rpc.block_number()
    c.finalize_all(env.signer(0), task_id, 0)
    events = c.events(block + 1)
    (slashed,) = [e for e in events if isinstance(e, chain.ValidatorSlashed)]
    assert (slashed.validator, slashed.amount) == (v2.address, P.slash_amount)
    (burned,) = [e for e in events if isinstance(e, chain.StakeBurned)]
    assert burned.amount == P.slash_amount == c.burned()
    assert c.node_info(v2.address).stake == 100 * TOKEN - P.slash_amount
    assert c.node_info(v1.address).stake == 100 * TOKEN
    assert conservation(env.client).holds
