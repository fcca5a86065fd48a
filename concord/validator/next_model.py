"""The next model on a validator node: the DiLoCo outer step (validator.aggregate) over a round's accepted
deltas.

On a node (`compute_next_model`, DESIGN 6.7): the outer step over the accepted deltas keyed by bundle
digest, each with the staleness its Submitted event's baseRound gives (and, when rebasing, model
baseRound's state: `stale_bases`), from model r's weights and outer state, stored with
`put_model(store, state, model r's config, momentum, parent=model r digest)` before its digest is
committed; on an LM task over the accepted adapter deltas from model r's adapters
(client.runtime.lm_work), stored as a model of the same base file. With no accepted submission the
proposal is model r's own digest (the model stays).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence

import torch

from concord.client import timing
from concord.client.content.model_store import put_model
from concord.client.digest import Digest
from concord.client.runtime.display import fields
from concord.client.runtime.task import final_model_digest
from concord.validator.aggregate import outer_step
from concord.validator.context import SubmissionVerdict, Validator

log = logging.getLogger("concord.validator")


def accepted_delta(v: Validator, verdict: SubmissionVerdict) -> dict[str, torch.Tensor]:
    """An accepted submission's delta: in memory since verification, or fetched again (local cache)."""
    key = (verdict.round, verdict.index)
    if key not in v.deltas:
        v.deltas[key] = v.task.workload.fetch_delta(v.store, verdict.bundle_digest)
    return v.deltas[key]


def stale_bases(v: Validator, round_: int, base_rounds: Mapping[str, int]) -> dict[str, dict[str, torch.Tensor]]:
    """The state of model baseRound for every stale delta (the model its validators replayed from), keyed
    like the deltas; each base model fetched once."""
    states: dict[int, dict[str, torch.Tensor]] = {}
    for b in sorted({b for b in base_rounds.values() if b < round_}):
        states[b] = dict(v.task.workload.model_state(v.store, final_model_digest(v.task, b)).state)
    return {key: states[b] for key, b in base_rounds.items() if b < round_}


def compute_next_model(v: Validator, round_: int, base_digest: Digest, verdicts: Sequence[SubmissionVerdict]) -> Digest:
    """Model round+1 from model round (``base_digest``) and the accepted deltas, uploaded; returns its digest."""
    accepted = [x for x in verdicts if x.accepted]
    if not accepted:
        return base_digest
    with timing.span("ipfs"):
        base = v.task.workload.model_state(v.store, base_digest)  # on an LM task: the adapters
        deltas = {str(x.bundle_digest): accepted_delta(v, x) for x in accepted}  # summed in digest order
        # the baseRound each submission named on chain (a verdict exists only for a Submitted event seen)
        base_rounds = {str(x.bundle_digest): v.submissions[x.round][x.index].base_round for x in accepted}
        bases = stale_bases(v, round_, base_rounds) if v.task.task.outer.staleness_rebase > 0 else None
    staleness = {key: round_ - b for key, b in base_rounds.items()}
    started = time.perf_counter()
    with timing.span("aggregation"):
        state, momentum = outer_step(base.state, deltas, base.outer_state or {}, v.task.task.outer, staleness, bases)
    with timing.span("ipfs"):
        digest = put_model(v.store, state, base.config, momentum, parent_digest=base_digest)
    seconds = round(time.perf_counter() - started, 3)
    log.info(
        "model %d = %s from %d accepted of %d (%.2fs)",
        round_ + 1,
        digest,
        len(accepted),
        len(verdicts),
        seconds,
        extra=fields(
            event="next_model",
            round=round_,
            model=digest,
            accepted=len(accepted),
            submissions=len(verdicts),
            seconds=seconds,
        ),
    )
    for x in accepted:
        v.deltas.pop((x.round, x.index), None)
    return digest
