"""The task terms the chain and node tests share (a helper module, imported by name like chain_judge).

CHAIN_PARAMS: the protocol's usual economics (reward 300 + fee 60 a round, stakes 100, slash 80,
half of it a bounty), 600 s phases, no round limit, two validators, made-up digests: what the
SDK-level chain tests create tasks with. ``node_task`` is the small task the node tests publish
for real: CFG (2 prompts x 4 samples x 2 inner steps) as its spec, hour-long phases and a budget
of exactly ``max_rounds`` rounds.
"""

from __future__ import annotations

import dataclasses

from concord.client.chain import TaskParams
from concord.client.engine.config import DEFAULT_TASK, GRPOConfig
from scripts.harness import digest

TOKEN = 10**18
STAKE = 100 * TOKEN
CHAIN_PARAMS = TaskParams(
    spec_digest=digest("spec"),
    initial_model_digest=digest("model 0"),
    trainer_reward_per_round=300 * TOKEN,
    validator_fee_per_round=60 * TOKEN,
    min_trainer_stake=STAKE,
    min_validator_stake=STAKE,
    slash_amount=80 * TOKEN,
    submit_seconds=600,
    commit_seconds=600,
    reveal_seconds=600,
    max_rounds=0,
    bounty_bps=5000,
    async_level=0,
    min_validators=2,
    max_work_units=10**9,
)
CFG = dataclasses.replace(DEFAULT_TASK, grpo=GRPOConfig(prompts_per_step=2, group_size=4, inner_steps=2))


def node_task(max_rounds: int, min_validators: int):
    """A TaskFile (client.initiator) of CFG on CHAIN_PARAMS' economics, ready for publish_task."""
    from concord.client.content.task_spec import TaskSpecManifest, derived_limits
    from concord.client.engine.config import ValidationConfig
    from concord.client.initiator import UNPUBLISHED, TaskFile

    params = dataclasses.replace(
        CHAIN_PARAMS,
        spec_digest=UNPUBLISHED,
        initial_model_digest=UNPUBLISHED,
        submit_seconds=3600,
        commit_seconds=3600,
        reveal_seconds=3600,
        max_rounds=max_rounds,
        min_validators=min_validators,
        max_work_units=CFG.max_work_units,
    )
    # full mode: these tests pin which check rejects each cheat (sampled mode: test_sampling, test_sampled_round)
    spec = TaskSpecManifest(CFG, ValidationConfig(mode="full"), derived_limits(CFG))
    return TaskFile(spec, params, max_rounds * params.per_round)


# Issue 12's LM task, two one-digit terms (the default has 2-4 since issue 24): the LM tests that need a
# reward signal in a tiny round, or pin the code rather than the task file, name it.
TWO_TERMS = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}
