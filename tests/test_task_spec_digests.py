"""The shipped task files' specDigests, pinned: a spec's canonical bytes are on chain, so how the task
files are parsed and validated (client.engine.config, client.content.task_spec) may change, their
digests may not. Recorded before task-file validation moved to pydantic (issue 22, item 4); re-recorded on
purpose three times since: [outer] staleness_discount (a new key in every spec), the new default LM task,
and the LM's sampled-checks default (issue 24 item 5: [validation] mode, row_fraction, replay_steps)."""

from __future__ import annotations

from pathlib import Path

import pytest

from concord.client.content.manifest import canonical_bytes, digest_of
from concord.client.engine.config import DEFAULT_TASK, to_dict
from concord.client.engine.lm_task import DEFAULT_LM_TASK
from concord.client.initiator import load_task_file

CONFIGS = Path(__file__).resolve().parent.parent / "configs"

PINNED = {
    "default_task.toml": ("0x0dfb89cb3c240094c18554bfa393da5f0fd7394bca7c08e9ac9b386e854dcdbb", 1056),
    "lm_task.toml": ("0x7ed174627623870e6c0cf12b17a535932ee8c1355fac9eba845b72767e483ba9", 1313),
    "attacks_task.toml": ("0xbcf0ba156fa4dfcb04ef2bfa30451d35e64d036739a3da02b0112f85ab3d7fc0", 1046),
}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_shipped_task_files_keep_their_spec_digest(name: str) -> None:
    spec = load_task_file(CONFIGS / name).spec
    digest, size = PINNED[name]
    assert (str(spec.digest()), len(spec.to_bytes())) == (digest, size)
    assert type(spec).from_bytes(spec.to_bytes()) == spec  # what a node fetched parses back to the same spec


def test_default_tasks_serialise_as_before() -> None:
    """DEFAULT_TASK and DEFAULT_LM_TASK (built in code, not parsed) keep their canonical encoding too."""
    assert str(digest_of(canonical_bytes(to_dict(DEFAULT_TASK)))) == (
        "0x4bff86afe4d4df72b53e3fc1ef30245228cf385263a8003fc6cfed94c79a03bc"
    )
    assert str(digest_of(canonical_bytes(to_dict(DEFAULT_LM_TASK)))) == (
        "0x4ae49ecee04408969721948acf44c36b6913e8b613fdb2c0159dcc0ed648730e"
    )


def test_every_config_scalar_is_strict() -> None:
    """pydantic validates a plain `float` field leniently ("1.5" would pass as 1.5); the config dataclasses
    type their scalars Int / Real / Str / Bool (client.engine.config), so a task file's "3" is an error, not
    3. A new field typed `float` fails here, before it can change what a task file means."""
    import dataclasses
    import typing

    from concord.client.content.task_spec import SECTIONS
    from concord.client.engine.config import TaskConfig
    from concord.client.engine.lm_rollout import AdapterConfig
    from concord.client.engine.lm_task import LMTaskConfig, TextEnvConfig

    lenient = []
    for cls in {TaskConfig, LMTaskConfig, TextEnvConfig, AdapterConfig, *SECTIONS.values()}:
        hints = typing.get_type_hints(cls, include_extras=True)
        for f in dataclasses.fields(cls):
            typ = hints[f.name]
            origin, args = typing.get_origin(typ), typing.get_args(typ)
            args = args if origin is tuple else args[1:] if origin is dict else (typ,)  # a TOML key is a str
            lenient += [f"{cls.__name__}.{f.name}" for a in args if a in (int, float, str, bool)]
    assert not lenient, f"type these with Int / Real / Str / Bool: {sorted(lenient)}"
