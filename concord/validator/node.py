"""The validator node: DESIGN.md section 6 as a loop over one task's on-chain rounds.

Every tick reads chain state and does whatever protocol step is due, so a restarted node
picks up exactly where the chain and its state dir say it is:

    round r in Submit   -> commit a secret seed share (validator.shares; the submit phase closes early only
                           once every joined validator's share is in); judge each new submission as its
                           fetch ends (validator.judge.verify_round; in sampled mode once the seed is fixed)
    round r in Commit   -> validator.consensus.commit_round: reveal the share, judge on this validator's own
                           sample, flag and re-check (validator.recheck), build model r+1
                           (validator.aggregate), plan, commit
    round r in Reveal   -> reveal what the plan on disk committed to
    round in Finalize   -> finalize (any validator may; "already finalized" is fine)

The rooms below this one are listed in validator.context. `ValidatorHooks` names the protocol steps where a
validator could act otherwise (verify, sample, share, flags, vote, next model, commit, reveal); the node runs
the honest defaults; the lab implements them to play adversaries.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from collections.abc import Sequence

from concord.client import chain
from concord.client.chain import ChainClient, Phase, Signer, Submitted, keys
from concord.client.content.model_store import ModelError
from concord.client.content.store import DaemonError, StoreError, StoreUnavailable
from concord.client.content.task_spec import TaskSpecError
from concord.client.digest import Digest
from concord.client.engine.grpo import pin_determinism
from concord.client.engine.lm import ModelSourceError
from concord.client.runtime import lifecycle, parsers
from concord.client.runtime.config import NodeConfigError, node_config, parse_layered
from concord.client.runtime.connect import connect_node
from concord.client.runtime.display import (
    Display,
    StepAbandoned,
    disarm_stop_timer,
    fields,
    setup_logging,
    shutdown_event,
)
from concord.client.runtime.errors import explain
from concord.client.runtime.events import EventFollower
from concord.client.runtime.metrics import serve_metrics
from concord.client.runtime.task import UnknownTask, load_task_context
from concord.client.units import AmountError
from concord.validator.consensus import commit_round, ensure_enrolled, finalize_due, reveal_round
from concord.validator.context import SubmissionVerdict, Validator, ValidatorConfig, ValidatorError
from concord.validator.fetch import backfill_submissions, own_sample, record_submissions, stop_fetches
from concord.validator.flags import FlagItem
from concord.validator.judge import verify_round
from concord.validator.sampling import CheckSample
from concord.validator.shares import commit_share, reveal_share, share_committed
from concord.validator.store import load_verdicts, publish_pending

log = logging.getLogger("concord.validator")

MAX_TRANSIENT_FAILURES = 20  # consecutive failed ticks (IPFS or RPC down) before giving up
TRANSIENT = (StoreUnavailable, DaemonError, chain.RpcUnavailable, ModelError)


class ValidatorHooks:
    """The protocol steps (DESIGN.md section 6) where a validator could act otherwise, called by `step`
    and `commit_round` with the validator's live state ``v``.

    Each default is what an honest node does; `run_validator` runs them unless given others. The lab
    subclasses this to play adversaries.
    """

    def verify(self, v: Validator, round_: int) -> None:
        """Submit phase (steps 1-6): an honest validator fetches and judges each submission as it is seen."""
        verify_round(v, round_)

    def sample(self, v: Validator, sub: Submitted) -> CheckSample:
        """Sampled mode: what this validator checks expensively in ``sub``; an honest one draws its own
        sample from the round's seed (`own_sample`)."""
        return own_sample(v, sub)

    def share(self, v: Validator, round_: int) -> None:
        """Submit phase: an honest validator commits a secret seed share (validator.shares)."""
        if not share_committed(v.concord, v.task_id, v.me, round_):
            ensure_enrolled(v)  # a slash since start-up leaves the stake below the minimum: top it up
            commit_share(v.concord, v.signer, v.task_dir, v.task_id, round_)

    def reveal_share(self, v: Validator, round_: int) -> None:
        """Commit phase, first: an honest validator reveals the share it committed."""
        reveal_share(v.concord, v.signer, v.task_dir, v.task_id, round_)

    def flags(self, v: Validator, round_: int, found: Sequence[FlagItem]) -> Sequence[FlagItem]:
        """Commit phase, after its own sample: an honest validator flags exactly what failed in it."""
        return found

    def votes(
        self, v: Validator, round_: int, found: Sequence[SubmissionVerdict]
    ) -> tuple[Sequence[SubmissionVerdict], Sequence[SubmissionVerdict]]:
        """Commit phase, the vote (step 8): (the verdicts voted, the verdicts the next model is built
        from). An honest validator votes what verification found and builds the model from the same."""
        return found, found

    def next_model(self, v: Validator, round_: int, digest: Digest) -> Digest:
        """Commit phase, the next model (step 7): an honest validator votes the digest of model
        round+1 it computed and stored, ``digest``."""
        return digest

    def commit(self, v: Validator, round_: int, submissions: int) -> bool:
        """Commit phase: an honest validator verifies every submission, builds model round+1, plans and
        commits (`commit_round`). False while not ready (asked again on the next tick)."""
        return commit_round(v, round_, submissions)

    def reveal(self, v: Validator, round_: int) -> None:
        """Reveal phase: an honest validator reveals exactly what it committed (`reveal_round`)."""
        reveal_round(v, round_)


HONEST = ValidatorHooks()


def connect_validator(cfg: ValidatorConfig, hooks: ValidatorHooks = HONEST) -> Validator:
    """Connections, key, the task (spec from IPFS by its on-chain digest) and the verdicts already on disk."""
    node = connect_node(cfg.node)
    v = Validator(cfg, node, load_task_context(node, cfg.node.task_id, cfg.device), hooks)
    for verdict in load_verdicts(v.task_dir):
        v.verdicts[(verdict.round, verdict.index)] = verdict
        if verdict.evidence_digest:  # published before a restart or not: putting it again is idempotent
            v.unpublished.add(verdict.evidence_digest)
    return v


def step(v: Validator, display: Display | None = None) -> None:
    """One pass over the task's live rounds, doing whatever protocol step is due for each."""
    c = v.concord
    first = c.task_state(v.task_id).finalized_rounds
    for round_ in range(first, c.current_round(v.task_id) + 1):
        info = c.round_info(v.task_id, round_)
        if display is not None:
            verdicts = [x for (r, _), x in v.verdicts.items() if r == round_]
            display.update(
                round=round_,
                phase=info.phase.name,
                submissions=info.submissions,
                accepted=sum(x.accepted for x in verdicts),
                rejected=sum(not x.accepted for x in verdicts),
            )
        if info.phase == Phase.SUBMIT:
            v.hooks.share(v, round_)
            v.hooks.verify(v, round_)
        elif info.phase == Phase.COMMIT:
            if not c.commit_status(v.task_id, round_, v.me).committed:
                v.hooks.commit(v, round_, info.submissions)
        elif info.phase == Phase.REVEAL:
            status = c.commit_status(v.task_id, round_, v.me)
            if status.committed and not status.revealed:
                v.hooks.reveal(v, round_)
    finalize_due(v)
    publish_pending(v)  # last: evidence waits for nothing above, and nothing above waits for it


def finished(v: Validator) -> bool:
    """--rounds N reached (N rounds settled), or every one of the task's maxRounds settled."""
    settled = v.concord.task_state(v.task_id).finalized_rounds
    cap = v.task.params.max_rounds
    return (v.cfg.rounds is not None and settled >= v.cfg.rounds) or (cap > 0 and settled >= cap)


def withdraw_earnings(client: ChainClient, signer: Signer) -> int:
    """Withdraw the whole credited balance; returns the amount (0: nothing to withdraw)."""
    amount = client.concord.balance_of(signer.address)
    if amount > 0:
        client.concord.withdraw(signer, amount)
        shown = lifecycle.token_info(client).fmt(amount)
        log.info("withdrew %s to %s", shown, signer.address, extra=fields(event="withdrawn", amount=amount))
    return amount


def follow_task(v: Validator, follower: EventFollower, stop_event: threading.Event, display: Display) -> None:
    """One `step` per tick until stopped or ``finished``; transient failures (our IPFS or RPC) retried."""
    failures = 0
    ticks = follower.follow(stop_event)
    while not stop_event.is_set():
        try:
            step(v, display)
            failures = 0
        except TRANSIENT as e:  # our IPFS or RPC is down: not a verdict on anyone; try next tick
            failures += 1
            if failures >= MAX_TRANSIENT_FAILURES:
                raise
            log.warning("step failed (%s); retry %d/%d on the next block", e, failures, MAX_TRANSIENT_FAILURES)
        if finished(v):
            return
        tick = next(ticks, None)
        if tick is None:
            return
        record_submissions(v, tick.events)


def run_validator(cfg: ValidatorConfig, stop_event: threading.Event, hooks: ValidatorHooks = HONEST) -> Validator:
    """Validate until ``stop_event`` is set or ``finished``, each protocol step through ``hooks`` (default:
    the honest ones); the demo runs this in a process of its own."""
    v = connect_validator(cfg, hooks)
    ensure_enrolled(v)
    backfill_submissions(v)
    follower = EventFollower(v.node, v.task_id, cfg.node.poll_interval, cfg.node.heartbeat)
    log.info(
        "validating task %d as %s (state %s)",
        v.task_id,
        v.me,
        v.task_dir,
        extra=fields(event="start", task=v.task_id, validator=v.me),
    )
    try:
        with Display(f"validator {v.me[:10]} task {v.task_id}", cfg.node.json_logs) as display:
            follow_task(v, follower, stop_event, display)
    finally:
        stop_fetches(v)
    if cfg.withdraw:
        withdraw_earnings(v.client, v.signer)
    return v


add_run_args = parsers.add_validator_run_args  # the flags of `concord validator run` (the lab adds its own)


def run_command(args: argparse.Namespace, hooks: ValidatorHooks = HONEST) -> int:
    """Run what a parsed `run` command line describes, with ``hooks``; the exit status (an error: one
    line naming what is wrong and the fix, no traceback, 1)."""
    setup_logging(args.json_logs)
    try:
        node_cfg = node_config(args, "validator")
        pin_determinism(1)
        cfg = ValidatorConfig(
            node_cfg, rounds=args.rounds, withdraw=args.withdraw, stake=args.stake, device=args.device
        )
        serve_metrics(args, "validator")
        run_validator(cfg, shutdown_event(), hooks)
    except (
        NodeConfigError,
        UnknownTask,
        keys.KeyLoadError,
        ValidatorError,
        chain.ChainError,
        StoreError,
        TaskSpecError,
        ModelError,
        ModelSourceError,
        AmountError,
    ) as e:
        log.error("%s", explain(e))
        return 1
    except StepAbandoned as e:  # stopping: the step in progress is dropped (restart-safe), exit as stopped
        log.info("stopped: %s; the step in progress was abandoned", e, extra=fields(event="stopped", abandoned=True))
    finally:
        disarm_stop_timer()
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The parser of `concord validator` (run + the lifecycle commands); tests and main share it."""
    return parsers.validator_parser()


def main(argv: Sequence[str] | None = None) -> int:
    """`concord validator run --task ID [--config node.toml] [...]`, `concord validator leave|unbond|withdraw`
    (client.runtime.lifecycle)."""
    p = build_parser()
    args = parse_layered(p, argv)
    if args.action in lifecycle.COMMANDS:
        return lifecycle.run(args, "validator")
    return run_command(args)


if __name__ == "__main__":
    sys.exit(main())
