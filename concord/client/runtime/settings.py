"""Node settings from the environment and the node TOML, typed by pydantic-settings.

    env_layer(env) -> {dest: (value, source)}          what the env vars set (NodeEnv, pydantic-settings'
                                                       env source); source "$CONCORD_RPC_URL"
    file_layer(path, table) -> {dest: (value, source)} what the node TOML sets for a command group (NodeFile,
                                                       table by table); source "--config F: [validator] rpc_url"

Each layer is validated on its own, so an error names its source.
client.runtime.config.parse_layered puts these under the flags given on the command line and over the
flags' defaults; the network JSON comes after (client.runtime.config.node_config). A bad value is a
NodeConfigError naming its env var, or a ConfigFileError naming the file, the table and the key.

This module imports pydantic-settings (about a second on a busy machine): parse_layered loads it only
when there is something to layer (a --config file or a set env var), never for `--help`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import AliasChoices, BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, ValidationError
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from concord.client.runtime import parsers
from concord.client.runtime.config import (
    CONFIG_FLAG,
    ENV_VARS,
    TABLES,
    ConfigFileError,
    NodeConfigError,
    non_negative_int,
    positive_int,
    positive_seconds,
    read_toml_tables,
)
from concord.client.units import amount_arg


def _flag_type(convert: Callable[[str], Any]) -> BeforeValidator:
    """A TOML or env value through the flag's own argparse type: a string or a number, as typed."""

    def check(value: Any) -> Any:
        try:
            return convert(_text(value))
        except (argparse.ArgumentTypeError, ValueError, TypeError) as e:
            raise ValueError(str(e)) from None

    return BeforeValidator(check)


def _text(value: Any) -> str:
    """A TOML or env value that a flag would take as text: a string or a number."""
    if isinstance(value, (bool, list, dict)) or not isinstance(value, (str, int, float)):
        raise ValueError(f"expected a string or a number, got {value!r}")
    return str(value)


def _flag_bool(value: Any) -> Any:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


Text = Annotated[str, BeforeValidator(_text)]
FilePath = Annotated[Path, BeforeValidator(_text)]
Switch = Annotated[StrictBool, BeforeValidator(_flag_bool)]


def _env(dest: str) -> Any:
    return Field(None, validation_alias=AliasChoices(*ENV_VARS[dest]))


class NodeEnv(BaseSettings):
    """The settings an env var may give (ENV_VARS: ours first, then Foundry's); an empty one is unset."""

    model_config = SettingsConfigDict(case_sensitive=True, env_ignore_empty=True, extra="ignore", frozen=True)

    rpc_url: Text | None = _env("rpc_url")
    keystore: FilePath | None = _env("keystore")
    password_file: FilePath | None = _env("password_file")
    ipfs_api: Text | None = _env("ipfs_api")
    deployment: FilePath | None = _env("deployment")


class NodeFile(BaseModel):
    """Every key a node TOML may hold: the node flags' names (dashes or underscores), typed as the flags are
    (their own argparse types), and those some node commands add (--rounds, --stake, ...). Validated per
    table, so an error names the table its key is in."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    task: Annotated[int, _flag_type(positive_int)] | None = None
    devnet: FilePath | None = None
    rpc_url: Text | None = None
    deployment: FilePath | None = None
    ipfs_api: Text | None = None
    state_dir: FilePath | None = None
    keystore: FilePath | None = None
    password_file: FilePath | None = None
    devnet_account: Annotated[int, _flag_type(non_negative_int)] | None = None
    json_logs: Switch | None = None
    poll_interval: Annotated[float, _flag_type(positive_seconds)] | None = None
    config: FilePath | None = None
    rounds: Annotated[int, _flag_type(int)] | None = None
    stake: Annotated[Any, _flag_type(amount_arg("--stake"))] = None
    threads: Annotated[int, _flag_type(int)] | None = None
    withdraw: Switch | None = None
    metrics_port: Annotated[int, _flag_type(parsers.tcp_port_or_any)] | None = None
    metrics_host: Text | None = None
    device: Text | None = None


class _Mapping(EnvSettingsSource):
    """pydantic-settings' env source over a given mapping (parse_layered's ``env``, os.environ by default);
    an empty variable is unset (so $ETH_RPC_URL counts when $CONCORD_RPC_URL is empty)."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]) -> None:
        self._given = {name: value for name, value in env.items() if value}
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return self._given


def _from_env(env: Mapping[str, str]) -> NodeEnv:
    class Settings(NodeEnv):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (_Mapping(settings_cls, env),)  # the env vars only: no .env file, no secrets dir

    return Settings()


def env_layer(env: Mapping[str, str]) -> dict[str, tuple[Any, str]]:
    """What the env vars set: dest -> (typed value, "$NAME")."""
    names = {dest: next((n for n in group if env.get(n)), None) for dest, group in ENV_VARS.items()}
    try:
        values = _from_env(env)
    except ValidationError as e:
        err = e.errors()[0]
        dest = next((d for d, group in ENV_VARS.items() if set(map(str, err["loc"])) & set(group)), "")
        raise NodeConfigError(
            f"${names.get(dest) or err['loc'][0]}", err["msg"].removeprefix("Value error, ")
        ) from None
    return {dest: (getattr(values, dest), f"${name}") for dest, name in names.items() if name is not None}


def file_layer(path: Path, table: str) -> dict[str, tuple[Any, str]]:
    """What the node TOML sets for command group ``table``: its top level, then its [table] over it; dest
    -> (typed value, "--config FILE: [table] key"); relative paths are relative to the file's directory.
    Every table is checked (an unknown key in another command's table is an error too)."""
    tables = read_toml_tables(path)
    out: dict[str, tuple[Any, str]] = {}
    for name in ("", *TABLES):
        raw = {k.replace("-", "_"): v for k, v in tables.get(name, {}).items()}
        where = f"[{name}] " if name else ""
        try:
            values = NodeFile.model_validate(raw)
        except ValidationError as e:
            err = e.errors()[0]
            key = str(err["loc"][0]) if err["loc"] else "*"
            problem = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                problem = f"unknown key (known: {', '.join(sorted(NodeFile.model_fields))})"
            raise ConfigFileError(path, f"{where}{key}", problem) from None
        if name not in ("", table):
            continue
        for dest in raw:
            value = getattr(values, dest)
            if isinstance(value, Path):
                value = value.expanduser()
                value = value if value.is_absolute() else path.parent / value
            out[dest] = (value, f"{CONFIG_FLAG} {path}: {where}{dest}")
    return out
