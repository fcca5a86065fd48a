"""`concord trainer run`: the trainer node of DESIGN.md section 5, driven by chain events.

Per round it may submit in:
  1. pick_base_round     the newest final model m with round - asyncLevel <= m <= round
  2. prepare_submission  fetch model(m) (cached by digest), make_bundle (seeded prompts and
                         sampling, TOPLOC proofs, H inner GRPO steps, delta), put_submission
  3. submit_round        submit(round, baseRound, digest, proofRoot, workUnits) once the
                         round's submit phase is open

Generation does not wait on the chain: as soon as round r is submitted the node prepares
round r+1 on the newest model it may build on (with asyncLevel >= 1 that is already final),
and submits it the moment round r+1 opens. A node that restarts reads what it already
submitted from chain state (memberInfo.lastSubmitRound) and checks it again right before
every submit, so it never submits a round twice. When its own IPFS daemon is down it logs the
error (naming the API address) and retries on the next tick, at most MAX_STORE_FAILURES times.

`--cheat MODE` plays one adversarial trainer of scripts.adversaries.trainer_cheats.CHEATS (its hooks are called in
prepare_submission and before submit_round; logs say `cheated` per round); the demo's cheater
uses `inflated_rewards`.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from client import chain
from client.chain import ChainError, ContractError, Phase, Role
from client.chain.keys import KeyLoadError
from client.content.model_store import ModelError
from client.content.store import DaemonError, StoreError, StoreUnavailable
from client.content.task_spec import TaskSpecError
from client.engine.bundle import make_bundle
from client.engine.grpo import pin_determinism
from client.runtime import timing
from client.runtime.config import (
    NodeConfig,
    NodeConfigError,
    add_node_args,
    node_config,
)
from client.runtime.connect import Node, connect_node
from client.runtime.display import Display, fields, setup_logging, shutdown_event
from client.runtime.events import EventFollower, Tick
from client.runtime.task import (
    TaskContext,
    UnknownTask,
    current_round_now,
    load_task_context,
    model_for_round,
    phase_now,
)
from scripts.adversaries.trainer_cheats import (
    CHEATS,
    Cheat,
    Claim,
    cheat_context,
    honest_upload,
)

log = logging.getLogger("concord.trainer")

DONE_PHASES = (Phase.COMMIT, Phase.REVEAL, Phase.FINALIZE, Phase.FINALIZED, Phase.VOID)
STORE_DOWN = (StoreUnavailable, DaemonError)   # our own IPFS daemon is down or failing: retry, it is no verdict
MAX_STORE_FAILURES = 20                        # consecutive failed ticks before the node gives up


class WrongRole(RuntimeError):
    def __init__(self, address: str, role: Role) -> None:
        super().__init__(f"{address} is registered as {role.name}, not TRAINER: use another key")
        self.address, self.role = address, role


# ----------------------------------------------------------------------------- config and results

@dataclass(frozen=True)
class TrainerConfig:
    node: NodeConfig
    cheat: str | None = None
    rounds: int | None = None       # stop after this many submissions (None: until the task ends)
    stake: int | None = None        # base units to register with (default: the task's minTrainerStake)
    threads: int = 1                # torch threads (reproducibility: same settings, same bytes)

    def __post_init__(self) -> None:
        if self.cheat is not None and self.cheat not in CHEATS:
            raise NodeConfigError("--cheat", f"unknown mode {self.cheat!r} (known: {sorted(CHEATS)})")
        if self.rounds is not None and self.rounds <= 0:
            raise NodeConfigError("--rounds", f"must be > 0, got {self.rounds}")


@dataclass(frozen=True)
class Prepared:
    """A bundle uploaded for a round that waits for (or is in) its submit phase."""

    round: int
    base_round: int
    digest: str
    proof_root: bytes
    work_units: int
    mean_reward: float
    rollouts: int
    seconds: float
    cheat: str | None = None
    cheated: bool = False           # the cheat changed what was built or claimed this round


@dataclass(frozen=True)
class SubmittedRound:
    round: int
    base_round: int
    digest: str
    tx_hash: str
    block: int


@dataclass
class TrainerRun:
    """What one run did (returned by run_trainer; the demo and the tests read it)."""

    address: str = ""
    submitted: list[SubmittedRound] = field(default_factory=list)
    missed: list[int] = field(default_factory=list)
    rewards: int = 0
    slashed: int = 0


# ----------------------------------------------------------------------------- membership

def join_task(node: Node, ctx: TaskContext, stake: int | None = None) -> None:
    """Register as a trainer (stake) if needed, top the stake up to the task minimum, join the task."""
    concord, token, me = node.client.concord, node.client.token, node.address
    need = ctx.params.min_trainer_stake
    info = concord.node_info(me)
    if info.role == Role.NONE:
        amount = max(need, stake or 0)
        token.approve(node.signer, concord.address, amount)
        concord.register(node.signer, Role.TRAINER, amount)
        log.info("registered as trainer with stake %d", amount, extra=fields(event="registered", stake=amount))
    elif info.role != Role.TRAINER:
        raise WrongRole(me, info.role)
    else:
        free = info.stake - info.unbonding
        if free < need:
            token.approve(node.signer, concord.address, need - free)
            concord.add_stake(node.signer, need - free)
            log.info("stake topped up by %d to the task minimum %d", need - free, need,
                     extra=fields(event="stake_added", amount=need - free))
    if not concord.member_info(ctx.task_id, me).joined:
        concord.join(node.signer, ctx.task_id)
        log.info("joined task %d", ctx.task_id, extra=fields(event="joined", task=ctx.task_id))


def last_submitted_round(node: Node, ctx: TaskContext) -> int:
    """The newest round this trainer submitted to, from chain state (-1: none)."""
    m = node.client.concord.member_info(ctx.task_id, node.address)
    return m.last_submit_round if m.has_submitted else -1


# ----------------------------------------------------------------------------- the round (DESIGN.md 5)

def next_round(node: Node, ctx: TaskContext, done: int) -> int:
    """The round to work on: the one taking submissions now, else the next to open; never one already handled."""
    cur = current_round_now(node.client, ctx.task_id)
    open_now = phase_now(node.client, ctx.task_id, cur) == Phase.SUBMIT
    return max(cur if open_now else cur + 1, done + 1)


def pick_base_round(node: Node, ctx: TaskContext, round_: int) -> int | None:
    """The newest final model within the async window of ``round_``; None while none is final yet."""
    latest = node.client.concord.latest_model(ctx.task_id).model
    if latest < round_ - ctx.params.async_level:
        return None
    return min(latest, round_)


def acting_cheat(cheat: str | None, round_: int, ctx: TaskContext) -> Cheat | None:
    """The --cheat mode if it acts in ``round_`` (before its first round the node is honest)."""
    mode = CHEATS[cheat] if cheat is not None else None
    return mode if mode is not None and mode.acts(round_, ctx.params.async_level) else None


def prepare_submission(node: Node, ctx: TaskContext, round_: int, base_round: int, cheat: str | None,
                       display: Display) -> Prepared:
    """Fetch model(baseRound), generate + prove + train (make_bundle), upload; --cheat hooks in between."""
    t0 = time.perf_counter()
    display.update(round=round_, base=base_round, step="fetching model", upload="-", tx="-")
    with timing.span("ipfs"):
        policy = model_for_round(ctx, node.store, base_round)
    mode = acting_cheat(cheat, round_, ctx)                                      # --cheat
    cc = cheat_context(node, ctx, round_, base_round) if mode is not None else None
    if mode is not None and mode.model is not None:                            # --cheat: build on another model
        policy = mode.model(policy, cc)
    display.update(step="generating + training")
    bundle = make_bundle(policy, ctx.env, ctx.task, ctx.task_id, round_, node.address, base_round)
    if mode is not None and mode.bundle is not None:                           # --cheat: tamper with the bundle
        bundle = mode.bundle(bundle, cc)
    rollouts = sum(b.n for b in bundle.batches)
    display.update(step="uploading", rollouts=rollouts, mean_reward=round(bundle.mean_reward, 4),
                   work_units=bundle.work_units, upload="uploading")
    with timing.span("ipfs"):
        if mode is not None and mode.upload is not None:                       # --cheat: tamper with the upload
            claim = mode.upload(node.store, bundle, cc)
        else:
            claim = honest_upload(node.store, bundle)
    cheated = mode is not None and (mode.model or mode.bundle or mode.upload) is not None
    seconds = time.perf_counter() - t0
    display.update(step="ready", upload=claim.digest[:16])
    log.info("round %d prepared on model %d: %d rollouts, mean reward %.4f, bundle %s (%.1fs)%s", round_, base_round,
             rollouts, bundle.mean_reward, claim.digest, seconds, f" [cheat {cheat}]" if cheated else "",
             extra=fields(event="prepared", round=round_, base_round=base_round, rollouts=rollouts,
                          mean_reward=bundle.mean_reward, work_units=claim.work_units, digest=claim.digest,
                          proof_root=claim.proof_root, seconds=round(seconds, 3), cheat=cheat, cheated=cheated))
    return Prepared(round_, base_round, claim.digest, claim.proof_root, claim.work_units, bundle.mean_reward, rollouts,
                    seconds, cheat, cheated)


def cheat_claim(node: Node, ctx: TaskContext, prep: Prepared) -> Prepared | None:
    """--cheat: what a chain-level cheat submits instead of ``prep``; None while it waits (copied_bundle)."""
    mode = acting_cheat(prep.cheat, prep.round, ctx)
    if mode is None or mode.claim is None:
        return prep
    honest = Claim(prep.base_round, prep.digest, prep.proof_root, prep.work_units)
    claim = mode.claim(honest, cheat_context(node, ctx, prep.round, prep.base_round))
    if claim is None:
        return None
    return dataclasses.replace(prep, base_round=claim.base_round, digest=claim.digest, proof_root=claim.proof_root,
                               work_units=claim.work_units, cheated=prep.cheated or claim != honest)


def submit_round(node: Node, ctx: TaskContext, prep: Prepared, display: Display) -> SubmittedRound | None:
    """Submit once (re-checked against chain state right before); None if the round was already ours."""
    if last_submitted_round(node, ctx) >= prep.round:
        log.warning("round %d already submitted by %s (chain state): not submitting again", prep.round, node.address,
                    extra=fields(event="already_submitted", round=prep.round))
        return None
    join_task(node, ctx)   # a slash may have left the stake under the task minimum
    display.update(tx="pending")
    try:
        receipt = node.client.concord.submit(node.signer, ctx.task_id, prep.round, prep.base_round,
                                             bytes.fromhex(prep.digest), prep.proof_root, prep.work_units)
    except ChainError as e:
        if last_submitted_round(node, ctx) >= prep.round:   # the tx landed although we saw an error
            log.warning("submit of round %d reported %s but chain state shows it landed", prep.round, e)
            return None
        raise
    display.update(tx=f"ok block {receipt.block_number}", step="submitted")
    log.info("submitted round %d (base %d) bundle %s tx %s", prep.round, prep.base_round, prep.digest, receipt.tx_hash,
             extra=fields(event="submitted", round=prep.round, base_round=prep.base_round, digest=prep.digest,
                          proof_root=prep.proof_root, work_units=prep.work_units, tx=receipt.tx_hash,
                          block=receipt.block_number, cheat=prep.cheat, cheated=prep.cheated))
    return SubmittedRound(prep.round, prep.base_round, prep.digest, receipt.tx_hash, receipt.block_number)


def note_events(node: Node, tick: Tick, run: TrainerRun, display: Display) -> None:
    """Log what the chain says about this trainer: rewards, slashes, new models."""
    me = node.address
    for e in tick.events:
        if isinstance(e, chain.SubmissionRewarded) and e.trainer == me:
            run.rewards += e.reward
            display.update(rewards=run.rewards)
            log.info("round %d: rewarded %d", e.round, e.reward, extra=fields(event="rewarded", round=e.round,
                                                                           amount=e.reward))
        elif isinstance(e, chain.SubmissionRejected) and e.trainer == me:
            run.slashed += e.slashed
            display.update(slashed=run.slashed)
            log.warning("round %d: submission rejected, slashed %d", e.round, e.slashed,
                        extra=fields(event="slashed", round=e.round, amount=e.slashed))
        elif isinstance(e, chain.RoundFinalized):
            display.update(model=f"{e.round + 1}{' (void)' if e.is_void else ''}")
            log.info("round %d finalized%s: model %d = %s", e.round, " (void)" if e.is_void else "", e.round + 1,
                     e.next_model_digest.hex(), extra=fields(event="round_finalized", round=e.round,
                                                             void=e.is_void, model_digest=e.next_model_digest))


def run_trainer(cfg: TrainerConfig, stop: threading.Event) -> TrainerRun:
    """The node loop: follow the task's rounds until ``stop``, --rounds submissions, or the task's last round."""
    pin_determinism(cfg.threads)
    node = connect_node(cfg.node)
    ctx = load_task_context(node, cfg.node.task_id)
    run = TrainerRun(address=node.address)
    join_task(node, ctx, cfg.stake)
    done = last_submitted_round(node, ctx)
    log.info("trainer %s on task %d (async level %d), last submitted round %d%s", node.address, ctx.task_id,
             ctx.params.async_level, done, f", cheating: {cfg.cheat}" if cfg.cheat else "",
             extra=fields(event="started", address=node.address, task=ctx.task_id, last_submitted=done,
                          cheat=cfg.cheat))
    prepared: Prepared | None = None
    store_failures = 0
    follower = EventFollower(node, ctx.task_id, cfg.node.poll_interval, cfg.node.heartbeat)
    with Display(f"trainer {node.address[:10]} task {ctx.task_id}", cfg.node.json_logs) as display:
        display.update(task=ctx.task_id, cheat=cfg.cheat or "-", submitted=0)
        for tick in follower.follow(stop):
            note_events(node, tick, run, display)
            target = next_round(node, ctx, done)
            if ctx.params.max_rounds and target >= ctx.params.max_rounds:
                log.info("task %d has run its %d rounds", ctx.task_id, ctx.params.max_rounds,
                         extra=fields(event="task_over", max_rounds=ctx.params.max_rounds))
                break
            if prepared is None or prepared.round != target:
                base = pick_base_round(node, ctx, target)
                if base is None:
                    display.update(round=target, step=f"waiting for model {target - ctx.params.async_level}")
                    continue
                try:
                    prepared = prepare_submission(node, ctx, target, base, cfg.cheat, display)
                except ModelError as e:   # e.g. the validators' model r not (yet) in IPFS: retry next tick
                    display.update(step="model unavailable")
                    log.warning("round %d: model %d unusable: %s", target, base, e,
                                extra=fields(event="model_unavailable", round=target, base_round=base, error=str(e)))
                    continue
                except STORE_DOWN as e:
                    store_failures += 1
                    if store_failures >= MAX_STORE_FAILURES:
                        raise
                    display.update(step="IPFS unavailable")
                    log.warning("round %d: %s; retry %d/%d on the next tick", target, e, store_failures,
                                MAX_STORE_FAILURES, extra=fields(event="store_unavailable", round=target,
                                                                 error=str(e), attempt=store_failures))
                    continue
                store_failures = 0
            phase = phase_now(node.client, ctx.task_id, target)
            display.update(phase=phase.name.lower())
            if phase == Phase.PENDING:
                display.update(step="waiting for the round to open")
                continue
            if phase == Phase.SUBMIT:
                claimed = cheat_claim(node, ctx, prepared)          # --cheat: chain-level cheats change the claim
                if claimed is None:
                    display.update(step=f"cheat {cfg.cheat}: waiting")
                    continue
                try:
                    result = submit_round(node, ctx, claimed, display)
                except ContractError as e:
                    display.update(tx=f"failed: {e.name}")
                    log.warning("round %d: submit refused: %s", target, e,
                                extra=fields(event="submit_failed", round=target, error=str(e), error_name=e.name,
                                             base_round=claimed.base_round, cheat=cfg.cheat, cheated=claimed.cheated))
                    run.missed.append(target)
                    result = None
                if result is not None:
                    run.submitted.append(result)
                    display.update(submitted=len(run.submitted))
            else:
                log.warning("round %d: submit phase closed before the bundle was ready (%s)", target, phase.name,
                            extra=fields(event="missed", round=target, phase=phase.name))
                run.missed.append(target)
            done, prepared = target, None
            if cfg.rounds is not None and len(run.submitted) >= cfg.rounds:
                break
    return run


# ----------------------------------------------------------------------------- CLI

def main(argv: Sequence[str] | None = None) -> int:
    """`concord trainer run --task ID [--devnet F] [--state-dir D] [--cheat MODE] [--rounds N] [--json-logs]`."""
    p = argparse.ArgumentParser(prog="concord trainer", description="run a trainer node")
    sub = p.add_subparsers(dest="action", required=True)
    r = sub.add_parser("run", help="register, join and train on a task's rounds")
    add_node_args(r)
    r.add_argument("--cheat", choices=sorted(CHEATS), default=None,
                   help="play an adversarial trainer (scripts/adversaries/trainer_cheats.py; honest before the mode's first round)")
    r.add_argument("--rounds", type=int, default=None, help="stop after N submissions")
    r.add_argument("--stake", type=int, default=None, help="stake in base units (default: the task minimum)")
    r.add_argument("--threads", type=int, default=1, help="torch threads")
    args = p.parse_args(argv)
    setup_logging(args.json_logs)
    stop = shutdown_event()
    try:
        cfg = TrainerConfig(node_config(args, "trainer"), args.cheat, args.rounds, args.stake, args.threads)
        run = run_trainer(cfg, stop)
    except (NodeConfigError, KeyLoadError, WrongRole, UnknownTask, ChainError, StoreError, TaskSpecError,
            ModelError) as e:   # one line naming what is wrong, no traceback
        log.error("%s", e, extra=fields(event="error", error=str(e)))
        return 1
    except KeyboardInterrupt:
        log.warning("interrupted", extra=fields(event="interrupted"))
        return 130
    log.info("trainer stopped: %d submitted, %d missed", len(run.submitted), len(run.missed),
             extra=fields(event="stopped", submitted=[s.round for s in run.submitted], missed=run.missed,
                          rewards=run.rewards, slashed=run.slashed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
