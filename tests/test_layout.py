"""The architecture as a test: packages use each other's public names only, and no library module imports a
command-line module (DESIGN.md's module map)."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("headrep", "transfer", "generator")
CLI_MODULES = ("headrep.commands", "headrep.__main__", "transfer.cli", "generator.cli")


def _modules():
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            yield ".".join(parts), path


def unit(module: str) -> str:
    """The layer a module belongs to: a sub-package of headrep (headrep.model, headrep.fitting, …), headrep's
    own top-level modules (errors, io, paths, …) as "headrep", or a top-level package."""
    parts = module.split(".")
    if parts[0] == "headrep" and len(parts) > 1 and (ROOT / "headrep" / parts[1]).is_dir():
        return ".".join(parts[:2])
    return parts[0]


def is_cli(module: str) -> bool:
    return any(module == c or module.startswith(c + ".") for c in CLI_MODULES)


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _resolve(module: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def violations(module: str, path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    own = unit(module)
    is_pkg = path.name == "__init__.py"
    found, aliases = [], {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            target = _resolve(module, is_pkg, node)
            if target.split(".")[0] not in PACKAGES:
                continue
            for a in node.names:
                full = f"{target}.{a.name}"
                if _private(a.name) and unit(full if (ROOT / Path(*full.split("."))).is_dir() else target) != own:
                    found.append(f"{path.name}:{node.lineno} imports private {full}")
                if not is_cli(module) and (is_cli(target) or is_cli(full)):
                    found.append(f"{path.name}:{node.lineno} (library) imports CLI module {full}")
                aliases[a.asname or a.name] = full
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] not in PACKAGES:
                    continue
                if not is_cli(module) and is_cli(a.name):
                    found.append(f"{path.name}:{node.lineno} (library) imports CLI module {a.name}")
                aliases[a.asname or a.name.split(".")[0]] = a.asname and a.name or a.name.split(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr) and isinstance(node.value, ast.Name):
            target = aliases.get(node.value.id)
            if target and unit(target) != own:
                found.append(f"{path.name}:{node.lineno} uses private {target}.{node.attr}")
    return found


@pytest.mark.parametrize("module,path", list(_modules()), ids=lambda x: str(x) if isinstance(x, str) else "")
def test_public_names_across_packages_and_no_library_imports_a_cli(module, path):
    assert violations(module, path) == []


def test_the_checker_catches_what_it_should(tmp_path):
    """The rule itself, on modules written for the test (a checker that never fails proves nothing)."""
    bad = tmp_path / "bad.py"
    bad.write_text("from headrep.rep.format import _versions\nimport headrep.io as hio\nhio._open_video(1)\n"
                   "from headrep.commands.main import DEVICE_HELP\nfrom headrep.rep import HeadRep\n")
    found = violations("transfer.bad", bad)
    assert any("private headrep.rep.format._versions" in f for f in found)
    assert any("private headrep.io._open_video" in f for f in found)
    assert any("imports CLI module headrep.commands.main" in f for f in found)
    assert not any("HeadRep" in f for f in found)
    # inside one layer private names are the layer's own business; a CLI module may import CLI modules
    assert violations("headrep.rep.outputs", bad) != [] and not any(
        "_versions" in f for f in violations("headrep.rep.other", bad))
    assert not any("CLI" in f for f in violations("generator.cli", bad))


def test_headrep_reads_like_the_pipeline():
    names = {p.name for p in (ROOT / "headrep").iterdir() if p.is_dir() and not p.name.startswith("__")}
    assert {"model", "render", "fitting", "rep", "commands"} <= names
