"""The shipped task files' specDigests, pinned: a spec's canonical bytes are on chain, so how the task
files are parsed and validated (client.engine.config, client.content.task_spec) may change, their
digests may not. Recorded before task-file validation moved to pydantic (issue 22, item 4); re-recorded on
purpose three times since: [outer] staleness_discount (a new key in every spec), the new default LM task and
[outer] staleness_rebase (issue 23: a new key in every spec, and staleness_discount's default 1 -> 0)."""

from __future__ import annotations

from pathlib import Path

import pytest

from concord.client.content.manifest import canonical_bytes, digest_of
from concord.client.engine.config import DEFAULT_TASK, to_dict
from concord.client.engine.lm_task import DEFAULT_LM_TASK
from concord.client.initiator import load_task_file

CONFIGS = Path(__file__).resolve().parent.parent / "configs"

PINNED = {
    "default_task.toml": ("0x083e1e433b3b6da0bee0134fa3810023a561e12400dd1ee9d0bf1a16c79213ab", 1079),
    "lm_task.toml": ("0x2ab2b9badcc396027d13e78613316757e07e77320f046c35a8b0723ea6aebae0", 1333),
    "attacks_task.toml": ("0xe04e4ed0bbdf2dc087574ea84b1d9c2d65061c24dc78ba4956f9695e77de0752", 1069),
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
        "0xdf4498f7f756b26917d367b943958f89f11c706d9f6978237806753c4fc47792"
    )
    assert str(digest_of(canonical_bytes(to_dict(DEFAULT_LM_TASK)))) == (
        "0x4854f28cbeaf2a93bce589c4102285b598c09af488d99c5f96dc588c77993a98"
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
