"""Atomic writes honour the umask: outputs are readable by others when the umask allows it."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from a3d_mesh.atomic import atomic_path, atomic_write_text


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize(("umask", "expected"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_write_mode_follows_umask(tmp_path: Path, umask: int, expected: int) -> None:
    old = os.umask(umask)
    try:
        text_file = atomic_write_text(tmp_path / "manifest.json", "{}\n")
        # A library writing to the temp path itself (PIL, Blender) goes through atomic_path.
        with atomic_path(tmp_path / "tex.png") as tmp:
            tmp.write_bytes(b"png")
    finally:
        os.umask(old)
    assert _mode(text_file) == expected
    assert _mode(tmp_path / "tex.png") == expected


def test_atomic_write_mode_in_fresh_process(tmp_path: Path) -> None:
    """The umask a process starts with (what the CLI sees) decides, whatever the platform reads."""
    code = (
        "import os, sys; os.umask(0o027)\n"
        "from a3d_mesh.atomic import atomic_write_bytes\n"
        "atomic_write_bytes(sys.argv[1], b'x')\n"
    )
    dest = tmp_path / "out" / "a.glb"
    subprocess.run([sys.executable, "-c", code, str(dest)], check=True, timeout=120)
    assert _mode(dest) == 0o640
