"""`concord trainer run`: the trainer node of DESIGN.md section 5, driven by chain events.

Per round it may submit in:
  1. pick_base_round     the newest final model m with round - asyncLevel <= m <= round
  2. prepare_submission  fetch model(m) (cached by digest), Workload.train (seeded prompts and
                         sampling, TOPLOC proofs, H inner GRPO steps, delta), Workload.put
  3. submit_round        submit(round, baseRound, digest, proofRoot, workUnits) once the
                         round's submit phase is open

Generation does not wait on the chain: as soon as round r is submitted the node prepares
round r+1 on the newest model it may build on (with asyncLevel >= 1 that is already final),
and submits it the moment round r+1 opens. A node that restarts reads what it already
submitted from chain state (memberInfo.lastSubmitRound) and checks it again right before
every submit, so it never submits a round twice. When its own IPFS daemon is down it logs the
error (naming the API address) and retries on the next tick, at most MAX_STORE_FAILURES times.

The task's model kind is its workload (TaskContext.workload, client.runtime.workload): the tiny
transformer's bundle, or on an LM task the adapters' round on the loaded base model (issue 12).

`TrainerHooks` names the places in steps 2 and 3 where a node could act otherwise; the node runs
the honest defaults; the lab implements them to play adversaries and faults.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from concord.client import chain, timing
from concord.client.chain import ChainError, ContractError, Phase, Role
from concord.client.chain.keys import KeyLoadError
from concord.client.content.model_store import ModelError
from concord.client.content.store import DaemonError, StoreError, StoreUnavailable
from concord.client.content.task_spec import TaskSpecError
from concord.client.digest import Digest
from concord.client.engine.grpo import pin_determinism
from concord.client.engine.lm import ModelSourceError
from concord.client.runtime import lifecycle, parsers
from concord.client.runtime.config import (
    NodeConfig,
    NodeConfigError,
    check_device,
    node_config,
    parse_layered,
)
from concord.client.runtime.connect import Node, connect_node
from concord.client.runtime.display import (
    Display,
    StepAbandoned,
    disarm_stop_timer,
    fields,
    setup_logging,
    shutdown_event,
)
from concord.client.runtime.errors import explain
from concord.client.runtime.events import EventFollower, Tick
from concord.client.runtime.metrics import serve_metrics
from concord.client.runtime.task import (
    TaskContext,
    UnknownTask,
    current_round_now,
    load_task_context,
    phase_now,
    round_base,
)
from concord.client.units import AmountError, TokenAmount

log = logging.getLogger("concord.trainer")

DONE_PHASES = (Phase.COMMIT, Phase.REVEAL, Phase.FINALIZE, Phase.FINALIZED, Phase.VOID)
STORE_DOWN = (StoreUnavailable, DaemonError)  # our own IPFS daemon is down or failing: retry, it is no verdict
MAX_STORE_FAILURES = 20  # consecutive failed ticks before the node gives up


class WrongRole(RuntimeError):
    def __init__(self, address: str, role: Role) -> None:
        super().__init__(f"{address} is registered as {role.name}, not TRAINER: use another key")
        self.address, self.role = address, role


# ----------------------------------------------------------------------------- config and results


@dataclass(frozen=True)
class TrainerConfig:
    node: NodeConfig
    rounds: int | None = None  # stop after this many submissions (None: until the task ends)
    stake: TokenAmount | None = None  # to register with (default: the task's minTrainerStake)
    threads: int = 1  # torch threads (reproducibility: same settings, same bytes)
    device: str = "cpu"  # where an LM task's model runs (cpu | cuda | cuda:N)

    def __post_init__(self) -> None:
        if self.rounds is not None and self.rounds <= 0:
            raise NodeConfigError("--rounds", f"must be > 0, got {self.rounds}")
        check_device(self.device)


@dataclass(frozen=True)
class Prepared:
    """A bundle uploaded for a round that waits for (or is in) its submit phase."""

    round: int
    base_round: int
    digest: Digest
    proof_root: bytes
    work_units: int
    mean_reward: float
    rollouts: int
    seconds: float


@dataclass(frozen=True)
class SubmittedRound:
    round: int
    base_round: int
    digest: Digest
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


# ----------------------------------------------------------------------------- hooks


class TrainerHooks:
    """The places in a round (DESIGN.md section 5, steps 2 and 3) where a trainer could act otherwise.

    Each default is what an honest node does; `run_trainer` runs them unless given others. The lab
    subclasses this to play adversaries and faults.
    """

    def base_model(self, node: Node, ctx: TaskContext, round_: int, base_round: int, base: Any) -> Any:
        """Step 2, the model to build on: an honest node builds round ``round_`` on model(baseRound),
        ``base`` as fetched (Workload.base; a shared policy: a hook clones it before changing it)."""
        return base

    def submission(self, node: Node, ctx: TaskContext, sub: Any) -> Any:
        """Step 2, the submission (Workload.train's Bundle, the one format for every kind): an
        honest node uploads what training built, unchanged."""
        return sub

    def upload(self, node: Node, ctx: TaskContext, sub: Any) -> Digest:
        """Step 2, the upload: an honest node puts the submission's files, then its manifest, in its own
        IPFS node (Workload.put); returns the manifest's digest, what goes on chain."""
        return ctx.workload.put(node.store, sub)

    def claim(self, node: Node, ctx: TaskContext, prep: Prepared) -> Prepared | None:
        """Step 3, the claim: an honest node submits (baseRound, digest, proofRoot, workUnits) of what it
        uploaded, ``prep`` itself. None: nothing to submit yet (asked again on the next tick)."""
        return prep


HONEST = TrainerHooks()


# ----------------------------------------------------------------------------- membership


def join_task(node: Node, ctx: TaskContext, stake: TokenAmount | None = None) -> None:
    """Register as a trainer (stake) if needed, top the stake up to the task minimum, join the task. A
    --stake below the minimum, above the contract's cap or the wallet is refused before any transaction."""
    concord, token, me = node.client.concord, node.client.token, node.address
    tok = lifecycle.token_info(node.client)  # amounts in logs: whole tokens with the symbol
    need = ctx.params.min_trainer_stake
    info = concord.node_info(me)
    if info.role not in (Role.NONE, Role.TRAINER):
        raise WrongRole(me, info.role)
    send = lifecycle.stake_to_send(node.client, me, need, stake, "the task's minimum trainer stake")
    if info.role == Role.NONE:
        amount = send
        token.approve(node.signer, concord.address, amount)
        concord.register(node.signer, Role.TRAINER, amount)
        log.info("registered as trainer with stake %s", tok.fmt(amount), extra=fields(event="registered", stake=amount))
    elif info.role != Role.TRAINER:
        raise WrongRole(me, info.role)
    else:
        free = info.stake - info.unbonding
        if free < need:
            token.approve(node.signer, concord.address, need - free)
            concord.add_stake(node.signer, need - free)
            log.info(
                "stake topped up by %s to the task minimum %s",
                tok.fmt(need - free),
                tok.fmt(need),
                extra=fields(event="stake_added", amount=need - free),
            )
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


def prepare_submission(
    node: Node, ctx: TaskContext, round_: int, base_round: int, display: Display, hooks: TrainerHooks = HONEST
) -> Prepared:
    """Fetch model(baseRound), generate + prove + train (make_bundle, or on an LM task make_submission),
    upload: each step through ``hooks``."""
    t0 = time.perf_counter()
    display.update(round=round_, base=base_round, step="fetching model", upload="-", tx="-")
    digest, proof_root, work_units, mean_reward, rollouts = _prepare(node, ctx, round_, base_round, display, hooks)
    seconds = time.perf_counter() - t0
    display.update(step="ready", upload=str(digest)[:18])
    log.info(
        "round %d prepared on model %d: %d rollouts, mean reward %.4f, bundle %s (%.1fs)",
        round_,
        base_round,
        rollouts,
        mean_reward,
        digest,
        seconds,
        extra=fields(
            event="prepared",
            round=round_,
            base_round=base_round,
            rollouts=rollouts,
            mean_reward=mean_reward,
            work_units=work_units,
            digest=digest,
            proof_root=proof_root,
            seconds=round(seconds, 3),
        ),
    )
    return Prepared(round_, base_round, digest, proof_root, work_units, mean_reward, rollouts, seconds)


def _prepare(
    node: Node, ctx: TaskContext, round_: int, base_round: int, display: Display, hooks: TrainerHooks
) -> tuple[Digest, bytes, int, float, int]:
    """A round on the task's workload: model(baseRound), Workload.train (rollouts, proofs, H inner steps),
    upload; returns (digest, proof root, work units, mean reward, rollouts)."""
    with timing.span("ipfs"):
        base = round_base(ctx, node.store, base_round)
    base = hooks.base_model(node, ctx, round_, base_round, base)
    display.update(step="generating + training")
    sub = hooks.submission(node, ctx, ctx.workload.train(base, ctx.task_id, round_, node.address, base_round))
    display.update(
        step="uploading",
        rollouts=sub.rollouts,
        mean_reward=round(sub.mean_reward, 4),
        work_units=sub.work_units,
        upload="uploading",
    )
    with timing.span("ipfs"):
        digest = Digest.parse(hooks.upload(node, ctx, sub), "upload hook's digest")
    return digest, bytes(sub.proof_root), sub.work_units, sub.mean_reward, sub.rollouts


def submit_round(node: Node, ctx: TaskContext, prep: Prepared, display: Display) -> SubmittedRound | None:
    """Submit once (re-checked against chain state right before); None if the round was already ours."""
    if last_submitted_round(node, ctx) >= prep.round:
        log.warning(
            "round %d already submitted by %s (chain state): not submitting again",
            prep.round,
            node.address,
            extra=fields(event="already_submitted", round=prep.round),
        )
        return None
    join_task(node, ctx)  # a slash may have left the stake under the task minimum
    display.update(tx="pending")
    try:
        receipt = node.client.concord.submit(
            node.signer,
            ctx.task_id,
            prep.round,
            prep.base_round,
            Digest.parse(prep.digest, "claimed digest").bytes,
            prep.proof_root,
            prep.work_units,
        )
    except ChainError as e:
        if last_submitted_round(node, ctx) >= prep.round:  # the tx landed although we saw an error
            log.warning("submit of round %d reported %s but chain state shows it landed", prep.round, e)
            return None
        raise
    display.update(tx=f"ok block {receipt.block_number}", step="submitted")
    log.info(
        "submitted round %d (base %d) bundle %s tx %s",
        prep.round,
        prep.base_round,
        prep.digest,
        receipt.tx_hash,
        extra=fields(
            event="submitted",
            round=prep.round,
            base_round=prep.base_round,
            digest=prep.digest,
            proof_root=prep.proof_root,
            work_units=prep.work_units,
            tx=receipt.tx_hash,
            block=receipt.block_number,
        ),
    )
    return SubmittedRound(prep.round, prep.base_round, prep.digest, receipt.tx_hash, receipt.block_number)


def note_events(node: Node, tick: Tick, run: TrainerRun, display: Display) -> None:
    """Log what the chain says about this trainer: rewards, slashes, new models."""
    me, tok = node.address, lifecycle.token_info(node.client)
    for e in tick.events:
        if isinstance(e, chain.SubmissionRewarded) and e.trainer == me:
            run.rewards += e.reward
            display.update(rewards=tok.fmt(run.rewards))  # whole tokens; the log's `amount` is base units
            log.info(
                "round %d: rewarded %s",
                e.round,
                tok.fmt(e.reward),
                extra=fields(event="rewarded", round=e.round, amount=e.reward),
            )
        elif isinstance(e, chain.SubmissionRejected) and e.trainer == me:
            run.slashed += e.slashed
            display.update(slashed=tok.fmt(run.slashed))
            log.warning(
                "round %d: submission rejected, slashed %s",
                e.round,
                tok.fmt(e.slashed),
                extra=fields(event="slashed", round=e.round, amount=e.slashed),
            )
        elif isinstance(e, chain.RoundFinalized):
            display.update(model=f"{e.round + 1}{' (void)' if e.is_void else ''}")
            log.info(
                "round %d finalized%s: model %d = %s",
                e.round,
                " (void)" if e.is_void else "",
                e.round + 1,
                Digest.parse(e.next_model_digest),
                extra=fields(event="round_finalized", round=e.round, void=e.is_void, model_digest=e.next_model_digest),
            )


def run_trainer(cfg: TrainerConfig, stop: threading.Event, hooks: TrainerHooks = HONEST) -> TrainerRun:
    """The node loop: follow the task's rounds until ``stop``, --rounds submissions, or the task's last round;
    ``hooks`` decide the model, bundle, upload and claim of each round (default: the honest ones)."""
    pin_determinism(cfg.threads)
    node = connect_node(cfg.node)
    ctx = load_task_context(node, cfg.node.task_id, cfg.device)
    run = TrainerRun(address=node.address)
    join_task(node, ctx, cfg.stake)
    done = last_submitted_round(node, ctx)
    log.info(
        "trainer %s on task %d (async level %d), last submitted round %d",
        node.address,
        ctx.task_id,
        ctx.params.async_level,
        done,
        extra=fields(event="started", address=node.address, task=ctx.task_id, last_submitted=done),
    )
    prepared: Prepared | None = None
    store_failures = 0
    follower = EventFollower(node, ctx.task_id, cfg.node.poll_interval, cfg.node.heartbeat)
    with Display(f"trainer {node.address[:10]} task {ctx.task_id}", cfg.node.json_logs) as display:
        display.update(task=ctx.task_id, submitted=0)
        for tick in follower.follow(stop):
            note_events(node, tick, run, display)
            target = next_round(node, ctx, done)
            if ctx.params.max_rounds and target >= ctx.params.max_rounds:
                log.info(
                    "task %d has run its %d rounds",
                    ctx.task_id,
                    ctx.params.max_rounds,
                    extra=fields(event="task_over", max_rounds=ctx.params.max_rounds),
                )
                break
            if prepared is None or prepared.round != target:
                base = pick_base_round(node, ctx, target)
                if base is None:
                    display.update(round=target, step=f"waiting for model {target - ctx.params.async_level}")
                    continue
                try:
                    prepared = prepare_submission(node, ctx, target, base, display, hooks)
                except ModelError as e:  # e.g. the validators' model r not (yet) in IPFS: retry next tick
                    display.update(step="model unavailable")
                    log.warning(
                        "round %d: model %d unusable: %s",
                        target,
                        base,
                        e,
                        extra=fields(event="model_unavailable", round=target, base_round=base, error=str(e)),
                    )
                    continue
                except STORE_DOWN as e:
                    store_failures += 1
                    if store_failures >= MAX_STORE_FAILURES:
                        raise
                    display.update(step="IPFS unavailable")
                    log.warning(
                        "round %d: %s; retry %d/%d on the next tick",
                        target,
                        e,
                        store_failures,
                        MAX_STORE_FAILURES,
                        extra=fields(event="store_unavailable", round=target, error=str(e), attempt=store_failures),
                    )
                    continue
                store_failures = 0
            phase = phase_now(node.client, ctx.task_id, target)
            display.update(phase=phase.name.lower())
            if phase == Phase.PENDING:
                display.update(step="waiting for the round to open")
                continue
            if phase == Phase.SUBMIT:
                claimed = hooks.claim(node, ctx, prepared)
                if claimed is None:
                    display.update(step="claim not ready: waiting")
                    continue
                try:
                    result = submit_round(node, ctx, claimed, display)
                except ContractError as e:
                    display.update(tx=f"failed: {e.name}")
                    log.warning(
                        "round %d: submit refused: %s",
                        target,
                        explain(e),  # amounts in tokens, times in ISO, and the fix
                        extra=fields(
                            event="submit_failed",
                            round=target,
                            error=str(e),
                            error_name=e.name,
                            base_round=claimed.base_round,
                        ),
                    )
                    run.missed.append(target)
                    result = None
                if result is not None:
                    run.submitted.append(result)
                    display.update(submitted=len(run.submitted))
            else:
                log.warning(
                    "round %d: submit phase closed before the bundle was ready (%s)",
                    target,
                    phase.name,
                    extra=fields(event="missed", round=target, phase=phase.name),
                )
                run.missed.append(target)
            done, prepared = target, None
            if cfg.rounds is not None and len(run.submitted) >= cfg.rounds:
                break
    return run


# ----------------------------------------------------------------------------- CLI


add_run_args = parsers.add_trainer_run_args  # the flags of `concord trainer run` (the lab adds its own to them)


def run_command(args: argparse.Namespace, hooks: TrainerHooks = HONEST) -> int:
    """Run the node a parsed `run` command line describes, with ``hooks``; the exit status (an error:
    one line naming what is wrong, no traceback, 1)."""
    setup_logging(args.json_logs)
    stop = shutdown_event()
    try:
        cfg = TrainerConfig(node_config(args, "trainer"), args.rounds, args.stake, args.threads, args.device)
        serve_metrics(args, "trainer")
        run = run_trainer(cfg, stop, hooks)
    except (
        NodeConfigError,
        KeyLoadError,
        WrongRole,
        lifecycle.LifecycleError,
        UnknownTask,
        ChainError,
        StoreError,
        TaskSpecError,
        ModelError,
        ModelSourceError,
        AmountError,
    ) as e:
        log.error("%s", explain(e), extra=fields(event="error", error=str(e)))
        return 1
    except KeyboardInterrupt:
        log.warning("interrupted", extra=fields(event="interrupted"))
        return 130
    except StepAbandoned as e:  # stopping: the round in progress is dropped (restart-safe), exit as stopped
        log.info("stopped: %s; the round in progress was abandoned", e, extra=fields(event="stopped", abandoned=True))
        return 0
    finally:
        disarm_stop_timer()
    log.info(
        "trainer stopped: %d submitted, %d missed",
        len(run.submitted),
        len(run.missed),
        extra=fields(
            event="stopped",
            submitted=[s.round for s in run.submitted],
            missed=run.missed,
            rewards=run.rewards,
            slashed=run.slashed,
        ),
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The parser of `concord trainer` (run + the lifecycle commands); tests and main share it."""
    return parsers.trainer_parser()


def main(argv: Sequence[str] | None = None) -> int:
    """`concord trainer run --task ID [--config node.toml] [--devnet F] [--state-dir D] [--rounds N] [--json-logs]`,
    `concord trainer leave|unbond|withdraw` (client.runtime.lifecycle)."""
    p = build_parser()
    args = parse_layered(p, argv)
    if args.action in lifecycle.COMMANDS:
        return lifecycle.run(args, "trainer")
    return run_command(args)


if __name__ == "__main__":
    sys.exit(main())
