"""Exports that fail cleanly (issue 23): a format whose writer fails is recorded in the manifest
while the other formats are still written (exit 1, one line); a missing tool or a bad format name
is refused before anything is written; and any other failure leaves the run folder as it was,
since files are staged next to export/ and moved into place only when all of them are there."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

import a3d_mesh.export.asset as asset
from a3d_mesh.run import STAGING_PREFIX
from a3d_mesh.config import dump_config, load_config
from a3d_mesh.export import ExportError
from a3d_mesh.checkpoint import atomic_torch_save
from a3d_mesh_cli.main import app
from tests.test_run_folder import PROMPTS, model_state, one_line_error, snapshot

runner = CliRunner()


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny run (untrained model: enough to export) exported once, with its manifest."""
    run = tmp_path_factory.mktemp("fail") / "run"
    (run / "checkpoints").mkdir(parents=True)
    cfg = load_config("tiny", ["export.texture_size=32", "export.formats=[glb]"])
    (run / "config.yaml").write_text(dump_config(cfg))
    (run / "prompts.txt").write_text(PROMPTS)
    atomic_torch_save({"step": 20, "stage": model_state()}, run / "checkpoints" / "refine.pt")
    res = runner.invoke(app, ["export", str(run), "-q"])
    assert res.exit_code == 0, res.output
    return run


@pytest.fixture()
def run_dir(exported: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(exported, out)
    return out


def failing_obj(*args, **kwargs):  # noqa: ANN002, ANN003, ANN201
    raise ExportError("the OBJ writer broke\nwith a second line")


def test_one_failed_format_does_not_abort_the_others(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(asset, "write_obj", failing_obj)
    res = runner.invoke(app, ["export", str(run_dir), "--format", "obj,glb", "--texture-size", "64", "-q"])
    line = one_line_error(res, 1, "dog.obj: the OBJ writer broke with a second line")
    assert "cat.obj" in line
    man = json.loads((run_dir / "manifest.json").read_text())
    for rec in man["assets"]:
        assert rec["failed"] == {"obj": "the OBJ writer broke with a second line"}
        assert rec["files"] == {"glb": f"{rec['name']}.glb"} and rec["texture_size"] == 64
        assert rec["sha256"] == {f"{rec['name']}.glb": asset.sha256_file(run_dir / "export" / f"{rec['name']}.glb")}
    assert not list(run_dir.glob(STAGING_PREFIX + "*"))


def test_any_other_failure_leaves_the_folder_as_it_was(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer failing after the GLB (here: a full disk) changes neither chair.glb nor the manifest."""
    before = snapshot(run_dir)

    def disk_full(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(asset, "write_obj", disk_full)
    res = runner.invoke(app, ["export", str(run_dir), "--format", "glb,obj", "--texture-size", "64", "-q"])
    one_line_error(res, 1, "no space left on device")
    assert snapshot(run_dir) == before
    assert not list(run_dir.glob(STAGING_PREFIX + "*"))


def test_missing_tool_fails_before_anything_is_written(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = snapshot(run_dir)

    def no_blender() -> str:
        raise ExportError("FBX export needs Blender on PATH")

    monkeypatch.setattr(asset, "find_blender", no_blender)
    one_line_error(runner.invoke(app, ["export", str(run_dir), "--format", "glb,fbx", "-q"]), 1, "needs Blender")
    one_line_error(runner.invoke(app, ["hybrid", str(run_dir), "--hybrid", "mix=dog@x>0,cat", "--format", "fbx"]),
                   1, "needs Blender")
    assert snapshot(run_dir) == before


@pytest.mark.parametrize("command", [["export"], ["hybrid", "--hybrid", "mix=dog@x>0,cat"]])
def test_format_names_are_checked_first(run_dir: Path, command: list[str]) -> None:
    before = snapshot(run_dir)
    res = runner.invoke(app, [command[0], str(run_dir), *command[1:], "--format", "glb,gltf"])
    one_line_error(res, 2, "unknown format 'gltf'")
    assert snapshot(run_dir) == before


def test_failed_hybrid_leaves_no_preview_or_file(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = snapshot(run_dir)

    def broken(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise RuntimeError("bake crashed")

    monkeypatch.setattr(asset, "bake_texture", broken)
    with pytest.raises(RuntimeError):
        runner.invoke(app, ["hybrid", str(run_dir), "--hybrid", "mix=dog@x>0,cat"], catch_exceptions=False)
    assert snapshot(run_dir) == before
    assert not list(run_dir.glob(STAGING_PREFIX + "*"))
