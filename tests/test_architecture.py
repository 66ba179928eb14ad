"""The one-way flow of docs/architecture.md, checked on the source: what reads a trained run never
imports training code, and the lower floors never import the floors above them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "a3d_mesh"

# floor -> packages it must never import (directly or in a function body)
RULES = {
    "run": ("a3d_mesh.train", "a3d_mesh.toy", "cli", "a3d_mesh_cli"),
    "export": ("a3d_mesh.train", "a3d_mesh.run", "a3d_mesh.guidance", "a3d_mesh.toy", "a3d_mesh_cli"),
    "fields": ("a3d_mesh.train", "a3d_mesh.run", "a3d_mesh.export", "a3d_mesh.guidance", "a3d_mesh.render"),
    "geometry": ("a3d_mesh.train", "a3d_mesh.run", "a3d_mesh.export", "a3d_mesh.guidance"),
    "render": ("a3d_mesh.train", "a3d_mesh.run", "a3d_mesh.export", "a3d_mesh.guidance"),
    "guidance": ("a3d_mesh.train", "a3d_mesh.run", "a3d_mesh.export"),
    # Pages read finished run folders; a batch drives `a3d-mesh run` children (the CLI's contract).
    "gallery": ("a3d_mesh.train", "a3d_mesh.guidance", "a3d_mesh.toy", "a3d_mesh_cli"),
    "batch": ("a3d_mesh.train", "a3d_mesh.guidance", "a3d_mesh.toy", "a3d_mesh_cli"),
}
# modules outside those folders that sit below training
BASE = ("progress.py", "images.py", "meshio.py", "checkpoint.py", "models.py", "atomic.py", "errors.py", "config_types.py")


def imported(path: Path) -> set[str]:
    """Every module name ``path`` imports, top level or inside functions (relative ones resolved)."""
    pkg = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            names.add(base)
    return names


def offenders(files: list[Path], banned: tuple[str, ...]) -> list[str]:
    return [f"{f.relative_to(ROOT)} imports {m}" for f in files for m in sorted(imported(f))
            if any(m == b or m.startswith(b + ".") for b in banned)]


@pytest.mark.parametrize("floor", sorted(RULES))
def test_floor_imports_only_downwards(floor: str) -> None:
    assert offenders(sorted((PKG / floor).rglob("*.py")), RULES[floor]) == []


def test_base_modules_import_no_floor_above() -> None:
    files = [PKG / name for name in BASE]
    assert all(f.is_file() for f in files)
    assert offenders(files, ("a3d_mesh.train", "a3d_mesh.run", "a3d_mesh.export", "a3d_mesh.guidance")) == []


def test_the_rule_catches_a_lazy_import(tmp_path: Path) -> None:
    """The scan sees imports inside functions (the kind that once hid a circle)."""
    f = PKG / "run" / "_probe_for_test.py"
    f.write_text("def late():\n    from a3d_mesh.train.finetune import parse_steps\n    return parse_steps\n")
    try:
        assert offenders([f], RULES["run"]) == ["a3d_mesh/run/_probe_for_test.py imports a3d_mesh.train.finetune"]
    finally:
        f.unlink()
