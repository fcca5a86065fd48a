"""The shipped task files' specDigests, pinned: a spec's canonical bytes are on chain, so how the task
files are parsed and validated (client.engine.config, client.content.task_spec) may change, their
digests may not. Recorded before task-file validation moved to pydantic (issue 22, item 4)."""

from __future__ import annotations

from pathlib import Path

import pytest

from concord.client.content.manifest import canonical_bytes, digest_of
from concord.client.engine.config import DEFAULT_TASK, to_dict
from concord.client.engine.lm_task import DEFAULT_LM_TASK
from concord.client.initiator import load_task_file

CONFIGS = Path(__file__).resolve().parent.parent / "configs"

PINNED = {
    "default_task.toml": ("0xeee6a277c09b2761664ba800f8ec4f16131e23f3b934eb9151144b96041e1405", 1031),
    "lm_task.toml": ("0x566683d6a79a7a6710968254166fcca83b2d47e02ad2fcaf19cb61072c59c5b2", 1285),
    "attacks_task.toml": ("0xe8d6c1ec4645f33fcae0fe452bfd139fa9162434f1f30791b626d1479d778ce5", 1021),
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
        "0x3b37c24b53923caf4bb1bface65ff367c9b01f774ea04dd5c7718036708b6838"
    )
    assert str(digest_of(canonical_bytes(to_dict(DEFAULT_LM_TASK)))) == (
        "0xf7992c46d0c39f7d83dc91ad013b4d46c2f17bdda8e00cdf05ae3e31dd8c5a6d"
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
