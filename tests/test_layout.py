"""The house's rules, checked on the import graph (every import statement, also inside functions).

* The library (client/, validator/) never imports the lab (scripts/); the CLI reaches the lab's
  subcommands by module name only (client/cli.py's dispatcher), never by an import statement.
* `client` never imports `validator`.
* The rooms of `client` are layered: leaves (digest, timing, units) <- chain, engine <- content <- runtime
  <- the roles (trainer, initiator, status, cli). A room imports only rooms below it.
* The validator node's rooms are layered too (context <- store <- fetch <- judge <- recheck <- aggregate
  <- consensus <- node), and so are the checks' (verdict <- rules <- pipeline <- tiny_prefill <- tiny_checks
  <- lm_checks <- checks, the registry), each module at most MAX_ROOM_LINES long.
* No model-kind dispatch (`x.lm is None`, isinstance on a kind's types, a workload's `kind` compared)
  outside the workloads (client/runtime/tiny_work.py, lm_work.py) and their registry (workload.py).
See docs/ARCHITECTURE.md for the drawing.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from scripts import REPO_ROOT

LIB = REPO_ROOT / "concord"  # the one import package: concord.client, concord.validator

pytestmark = pytest.mark.unit

# room -> the rooms it may import (besides itself)
LEAVES = {"client.digest", "client.timing", "client.units"}
ALLOWED: dict[str, set[str]] = {
    "client.digest": set(),
    "client.timing": set(),
    "client.units": set(),
    "client.chain": LEAVES,
    "client.engine": LEAVES,
    "client.content": LEAVES | {"client.engine"},
    "client.runtime": LEAVES | {"client.chain", "client.engine", "client.content"},
}
ROLES = {
    "client.trainer",
    "client.initiator",
    "client.status",
    "client.dashboard",
    "client.cli",
    "client.doctor",
    "client.model_export",
    "client.deploy",
    "client",
}


def room(module: str) -> str:
    """client.engine.grpo -> client.engine; client.trainer -> client.trainer; validator.node -> validator."""
    parts = module.split(".")
    if parts[0] == "client":
        return ".".join(parts[:2]) if len(parts) > 1 else "client"
    return parts[0]


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(LIB).with_suffix("").parts).removesuffix(".__init__")


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every absolute import in the file, at any depth."""
    out: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, ours(a.name)) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from concord.client import chain` imports the module client.chain
            out += [(node.lineno, ours(f"{node.module}.{a.name}")) for a in node.names]
    assert not any(isinstance(n, ast.ImportFrom) and n.level > 0 for n in ast.walk(ast.parse(path.read_text()))), (
        f"{path}: relative import (the house uses absolute imports)"
    )
    return out


def ours(name: str) -> str:
    """concord.client.chain -> client.chain: the rooms below are named inside the package."""
    return name.removeprefix("concord.")


def library_files() -> list[Path]:
    return sorted([*(LIB / "client").rglob("*.py"), *(LIB / "validator").rglob("*.py")])


def first_party(name: str) -> bool:
    return name.split(".")[0] in ("client", "validator", "scripts")


def test_library_never_imports_the_lab() -> None:
    bad = [
        f"{p.relative_to(REPO_ROOT)}:{line} imports {name}"
        for p in library_files()
        for line, name in imports(p)
        if name.split(".")[0] == "scripts"
    ]
    assert bad == []


def test_client_never_imports_validator() -> None:
    bad = [
        f"{p.relative_to(REPO_ROOT)}:{line} imports {name}"
        for p in (LIB / "client").rglob("*.py")
        for line, name in imports(p)
        if name.split(".")[0] == "validator"
    ]
    assert bad == []


def test_rooms_import_only_rooms_below_them() -> None:
    bad = []
    for p in (LIB / "client").rglob("*.py"):
        me = room(module_name(p))
        if me in ROLES or me not in ALLOWED:
            assert me in ROLES, f"{p.relative_to(REPO_ROOT)} is in no room of client/: add it to docs/ARCHITECTURE.md"
            continue
        for line, name in imports(p):
            if not first_party(name):
                continue
            other = room(name)
            if other == "client" and name.count(".") == 1:  # `from client import X`: X is the room
                other = name
            if other != me and other not in ALLOWED[me]:
                bad.append(f"{p.relative_to(REPO_ROOT)}:{line} ({me}) imports {name} ({other})")
    assert bad == []


def test_the_graph_checker_sees_function_level_imports(tmp_path: Path) -> None:
    """The rule would be empty if imports inside functions went unseen (they were how the old house hid them)."""
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from concord.validator import node\n    import scripts.demo\n")
    assert imports(f) == [(2, "validator.node"), (3, "scripts.demo")]


def test_the_lab_is_not_packaged() -> None:
    """pyproject's package list ships the one package `concord` (client and validator inside): no lab, no
    generic top-level name like `client` that another distribution could also install."""
    import tomllib

    found = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    assert set(found["include"]) == {"concord*"}


def test_honest_loops_carry_no_cheat_or_drill_code() -> None:
    """Adversaries and fault drills play through the loops' hook objects (TrainerHooks, ValidatorHooks),
    implemented in the lab: the loops and the wire format name neither, nor read a test-only variable."""
    for rel in (
        "client/trainer.py",
        *(f"validator/{room}.py" for room in VALIDATOR_ROOMS),
        "client/content/submission.py",
    ):
        text = (LIB / rel).read_text().lower()
        assert [w for w in ("cheat", "drill", "concord_drill") if w in text] == [], rel


def test_every_test_is_exactly_one_tier() -> None:
    """conftest's collection hook: a test with no tier gets unit or integration from its fixtures, an
    e2e test stays e2e only, and a test marked with two tiers fails the collection (so `pytest -m unit`,
    `-m integration` and `-m e2e` partition the suite)."""
    import conftest

    class Item:
        def __init__(self, fixtures: tuple[str, ...], *marks: str, module: str = "test_x") -> None:
            self.nodeid, self.fixturenames, self.marks = f"tests/{module}.py::t", fixtures, list(marks)

        def get_closest_marker(self, name: str):
            return name if name in self.marks else None

        def add_marker(self, mark) -> None:
            self.marks.append(mark.name)

    items = [Item(()), Item(("tmp_path", "chain_env")), Item(("ipfs",), "e2e", module="test_demo"), Item((), "slow")]
    conftest.pytest_collection_modifyitems(items)
    assert [conftest.kinds_of(i) for i in items] == [["unit"], ["integration"], ["e2e"], ["unit"]]
    with pytest.raises(pytest.UsageError, match="exactly one of"):
        conftest.pytest_collection_modifyitems([Item((), "e2e", "integration")])
    # pytest-xdist: a module runs whole on one worker; every network module in one scope, and an e2e
    # test outside those modules fails the collection
    assert conftest.scope_of("tests/test_x.py::test_a[1]") == "test_x"
    assert conftest.scope_of("tests/test_demo.py::test_a") == conftest.scope_of("tests/test_netns.py::b") == "network"
    with pytest.raises(pytest.UsageError, match="NETWORK_MODULES"):
        conftest.pytest_collection_modifyitems([Item((), "e2e", module="test_x")])


# the validator node's rooms, bottom first; each imports only the ones before it (and validator's leaves)
VALIDATOR_ROOMS = ("context", "store", "fetch", "judge", "recheck", "aggregate", "next_model", "consensus", "node")
# the checks' rooms, bottom first: each imports only the ones before it and the leaves above (the one walk is
# pipeline; what a model kind computes is tiny_checks / lm_checks; checks is their registry)
CHECK_ROOMS = ("verdict", "rules", "pipeline", "tiny_prefill", "tiny_checks", "lm_checks", "checks")
VALIDATOR_LEAVES = {*CHECK_ROOMS, "sampling", "flags", "files", "shares"}
MAX_ROOM_LINES = 300


def test_validator_rooms_import_downward_only_and_stay_small() -> None:
    bad = []
    for i, me in enumerate(VALIDATOR_ROOMS):
        path = LIB / "validator" / f"{me}.py"
        lines = len(path.read_text().splitlines())
        if lines > MAX_ROOM_LINES:
            bad.append(f"validator/{me}.py: {lines} lines (at most {MAX_ROOM_LINES})")
        allowed = set(VALIDATOR_ROOMS[:i]) | VALIDATOR_LEAVES
        for line, name in imports(path):
            parts = name.split(".")
            if parts[0] == "validator" and len(parts) > 1 and parts[1] != me and parts[1] not in allowed:
                bad.append(f"validator/{me}.py:{line} imports {name}")
    for leaf in VALIDATOR_LEAVES:
        path = LIB / "validator" / f"{leaf}.py"
        if (lines := len(path.read_text().splitlines())) > MAX_ROOM_LINES:
            bad.append(f"validator/{leaf}.py: {lines} lines (at most {MAX_ROOM_LINES})")
        for line, name in imports(path):
            if name.split(".")[0] == "validator" and name.split(".")[1] in VALIDATOR_ROOMS:
                bad.append(f"validator/{leaf}.py:{line} imports {name} (a leaf imports no node room)")
    for i, me in enumerate(CHECK_ROOMS):
        allowed = set(CHECK_ROOMS[:i]) | (VALIDATOR_LEAVES - set(CHECK_ROOMS))
        for line, name in imports(LIB / "validator" / f"{me}.py"):
            parts = name.split(".")
            if parts[0] == "validator" and len(parts) > 1 and parts[1] != me and parts[1] not in allowed:
                bad.append(f"validator/{me}.py:{line} imports {name} (the checks' rooms import downward only)")
    assert sorted(p.stem for p in (LIB / "validator").glob("*.py") if p.stem != "__init__") == sorted(
        {*VALIDATOR_ROOMS, *VALIDATOR_LEAVES}
    ), "a validator module in no room: add it to VALIDATOR_ROOMS or CHECK_ROOMS (and docs/ARCHITECTURE.md)"
    assert bad == []


# ----------------------------------------------------------------------------- one workload seam (issue 22)
# What a model kind does lives in its workload (client.runtime.workload: TinyWork, LMWork), chosen once by
# the registry; nothing else asks which kind a task is. Dispatch is: an `x.lm is (not) None` test, an
# isinstance on a kind's own types, or a comparison of a workload's `kind`.
KIND_TYPES = {
    "Bundle",
    "LMAdaptersConfig",
    "LMRollouts",
    "LMTaskConfig",
    "LMWork",
    "TaskSpecManifest",
    "TinyWork",
}
KIND_HOMES = {
    "client/runtime/workload.py": "the registry",
    "client/runtime/tiny_work.py": "the tiny transformer's workload",
    "client/runtime/lm_work.py": "the LM's workload",
}
# sites that still ask, each with why, until they move onto the seam: the list only shrinks, and since
# issue 22 it is empty (the model codec, the initiator, the export and the flag re-check moved)
KIND_NOT_YET: dict[str, str] = {}


def kind_dispatch(path: Path) -> list[tuple[int, str]]:
    """(line, what) for every model-kind dispatch in the file (see KIND_TYPES above)."""
    out: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Compare) and isinstance(node.left, ast.Attribute):
            left, right = node.left, node.comparators[0]
            if left.attr == "lm" and isinstance(right, ast.Constant) and right.value is None:
                out.append((node.lineno, f"{ast.unparse(node)}"))
            if left.attr == "kind" and "workload" in ast.unparse(left.value):
                out.append((node.lineno, f"{ast.unparse(node)}"))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "isinstance":
            types = node.args[1] if len(node.args) == 2 else None
            names = (
                {n.id if isinstance(n, ast.Name) else getattr(n, "attr", "") for n in ast.walk(types)}
                if types
                else set()
            )
            if names & KIND_TYPES:
                out.append((node.lineno, f"{ast.unparse(node)}"))
    return out


def test_no_model_kind_dispatch_outside_the_workloads_and_the_registry() -> None:
    bad = [
        f"concord/{rel}:{line} {what}"
        for p in library_files()
        if (rel := p.relative_to(LIB).as_posix()) not in KIND_HOMES and rel not in KIND_NOT_YET
        for line, what in kind_dispatch(p)
    ]
    assert bad == [], "ask the task's workload (client.runtime.workload) instead"
    assert all(kind_dispatch(LIB / rel) for rel in KIND_NOT_YET), (
        "a site moved onto the seam: drop it from KIND_NOT_YET"
    )


def test_the_dispatch_checker_sees_each_form(tmp_path: Path) -> None:
    f = tmp_path / "m.py"
    f.write_text(
        "def f(ctx, v, sub):\n"
        "    if ctx.lm is None:\n"
        "        pass\n"
        "    if isinstance(sub, (int, LMWork)):\n"
        "        pass\n"
        "    if v.task.workload.kind == 'lm':\n"
        "        pass\n"
        "    if isinstance(sub, int) or ctx.kind == 'tiny':\n"
        "        pass\n"
    )
    assert [line for line, _ in kind_dispatch(f)] == [2, 4, 6]
