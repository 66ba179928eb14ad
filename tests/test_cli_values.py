"""Bad values through the command line (issue 28, items 7 and 8): every one is refused with one
line and exit code 2 before anything is written, and an existing run folder is left as it was."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import trimesh
from typer.testing import CliRunner

from a3d_mesh.config import dump_config, load_config
from a3d_mesh.config_ranges import MAX_SEED
from a3d_mesh.runlock import LOCK_FILE
from a3d_mesh_cli.main import app

runner = CliRunner()


def one_line_error(res, text: str) -> str:  # noqa: ANN001 (click's Result)
    lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
    assert res.exit_code == 2, res.output
    assert len(lines) == 1 and lines[0].startswith("a3d-mesh: error:"), res.output
    assert text in lines[0], lines[0]
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file's bytes, but the run lock's (a3d_mesh.runlock: it marks the folder and stays)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != LOCK_FILE}


@pytest.fixture()
def prompts(tmp_path: Path) -> Path:
    p = tmp_path / "pets.txt"
    p.write_text("dog: a dog\ncat: a cat\n")
    return p


@pytest.fixture()
def saved_run(tmp_path: Path, prompts: Path) -> Path:
    """A run folder as `run` leaves it before training: its config and prompts (what --resume reads)."""
    d = tmp_path / "saved"
    d.mkdir()
    (d / "config.yaml").write_text(dump_config(load_config("tiny")))
    (d / "prompts.txt").write_text(prompts.read_text())
    return d


@pytest.mark.parametrize("override, text", [
    ("preview.views=0", "config key preview.views must be a whole number in 1..64, got 0"),
    ("coarse.samples_per_ray=0", "config key coarse.samples_per_ray must be a whole number in 1..4096, got 0"),
    ("export.target_faces=0", "config key export.target_faces must be empty (no budget) or a whole number in 4.."),
    ("export.texture_size=200000", "config key export.texture_size must be a whole number in 16..16384, got 200000"),
    ("camera.fov_range=[90,10]", "config key camera.fov_range must be [low, high] with low <= high, within (0, 180)"),
    ("camera.distance_range=[0,0]", "config key camera.distance_range must be [low, high] with low <= high"),
    ("refine.steps=1e23", "config key 'refine.steps': 1e+23 is not a int"),
    ("refine.steps=100000000000000000000000", "config key refine.steps must be a whole number in 0..10000000"),
])
def test_bad_config_values_write_nothing(prompts: Path, tmp_path: Path, override: str, text: str) -> None:
    out = tmp_path / "r"
    one_line_error(runner.invoke(app, ["run", str(prompts), "--preset", "tiny", "--out", str(out), override]), text)
    assert not out.exists()


@pytest.mark.parametrize("seed", ["1e23", "-1", str(MAX_SEED + 1), "abc", "4²"])
def test_bad_seed_flag_writes_nothing(prompts: Path, tmp_path: Path, seed: str) -> None:
    out = tmp_path / "r"
    for cmd in (["run", str(prompts)], ["edit", str(tmp_path / "in.ply"), str(prompts)]):
        res = runner.invoke(app, [*cmd, "--preset", "tiny", "--out", str(out), "--seed", seed])
        one_line_error(res, f"--seed: expected a whole number in 0..{MAX_SEED}, got '{seed}'")
        assert not out.exists()


def test_non_utf8_preset_file(prompts: Path, tmp_path: Path) -> None:
    preset = tmp_path / "mine.yaml"
    preset.write_bytes(b"seed: 3\n# caf\xe9\n")
    out = tmp_path / "r"
    one_line_error(runner.invoke(app, ["run", str(prompts), "--preset", str(preset), "--out", str(out)]),
                   "is not UTF-8 text")
    assert not out.exists()


def test_bundled_preset_wins_over_a_file_of_that_name(prompts: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """``--preset tiny`` is the bundled preset even with a ``tiny`` file (here not even YAML) and a
    ``toy`` folder in the working directory; the bad override shows which preset was read."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny").write_text("refine: [1, 2\n")
    (tmp_path / "toy").mkdir()
    for name in ("tiny", "toy"):
        res = runner.invoke(app, ["run", str(prompts), "--preset", name, "--out", "r", "preview.views=0"])
        one_line_error(res, "config key preview.views must be")
    one_line_error(runner.invoke(app, ["run", str(prompts), "--preset", "./tiny", "--out", "r"]), "not valid YAML")
    one_line_error(runner.invoke(app, ["run", str(prompts), "--preset", "./toy", "--out", "r"]), "preset ./toy is not a file")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("extra, text", [
    (["--preset", "tiny"], "drop --preset"),
    (["--preset", "default"], "drop --preset"),
    (["--seed", "3"], "drop --seed"),
    (["--preset", "toy", "refine.steps=3"], "drop --preset and the overrides"),
])
def test_resume_refuses_preset_seed_and_overrides(saved_run: Path, prompts: Path, tmp_path: Path,
                                                  extra: list[str], text: str) -> None:
    before = snapshot(saved_run)
    for cmd in (["run", str(prompts)], ["edit", str(tmp_path / "in.ply"), str(prompts)]):
        res = runner.invoke(app, [*cmd, "--out", str(saved_run), "--resume", *extra])
        one_line_error(res, "--resume continues with the run's saved config.yaml; " + text)
    assert snapshot(saved_run) == before


def test_run_folder_with_a_non_utf8_config(saved_run: Path, prompts: Path) -> None:
    (saved_run / "config.yaml").write_bytes(b"seed: 1\n# \xff\n")
    (saved_run / "checkpoints").mkdir()
    (saved_run / "checkpoints" / "refine.pt").write_bytes(b"")  # export checks it exists before reading the config
    before = snapshot(saved_run)
    one_line_error(runner.invoke(app, ["run", str(prompts), "--out", str(saved_run), "--resume"]), "is not UTF-8 text")
    one_line_error(runner.invoke(app, ["export", str(saved_run)]), "is not UTF-8 text")
    assert snapshot(saved_run) == before


def test_resume_names_the_saved_config_holding_a_bad_value(saved_run: Path, prompts: Path) -> None:
    """A run folder written before these checks (preview.views=0 made it fail after training) is
    refused at once, naming the file to fix, since --resume takes no overrides."""
    cfg = saved_run / "config.yaml"
    cfg.write_text(cfg.read_text().replace("\n  views: 4\n", "\n  views: 0\n"))
    before = snapshot(saved_run)
    one_line_error(runner.invoke(app, ["run", str(prompts), "--out", str(saved_run), "--resume"]),
                   f"config key preview.views must be a whole number in 1..64, got 0 (in {cfg})")
    assert snapshot(saved_run) == before


@pytest.mark.parametrize("flags, text", [
    (["--texture-size", "200000"], "--texture-size must be in 16..16384, got 200000"),
    (["--texture-size", "8"], "--texture-size must be in 16..16384, got 8"),
    (["--faces", "0"], "--faces must be in 4..2147483647, got 0"),
])
def test_export_flags_bounded_like_the_config(saved_run: Path, flags: list[str], text: str) -> None:
    before = snapshot(saved_run)
    one_line_error(runner.invoke(app, ["export", str(saved_run), *flags]), text)
    assert snapshot(saved_run) == before and not (saved_run / "export").exists()


def _box(path: Path, scale: list[float], offset: float = 0.0) -> Path:
    b = trimesh.creation.box()
    trimesh.Trimesh(b.vertices * np.asarray(scale) + offset, b.faces, process=False).export(path)
    return path


@pytest.mark.parametrize("scale, offset, text", [
    ([1.0, 0.0, 1.0], 0.0, "is flat (0 thick along y, 1 across): a surface without thickness has no inside"),
    ([2.0, 1.0, 1e-4], 5.0, "is flat (0.0001 thick along z, 2 across)"),
    ([6e38, 6e38, 6e38], 0.0, "has coordinates too large (up to 3e+38 in its units; at most 1e+30): scale it down"),
    ([1.0, 1.0, 1.0], 3e30, "has coordinates too large (up to 3e+30 in its units"),
    ([0.0, 0.0, 0.0], 1.0, "cannot be used: mesh is empty after cleanup"),
])
def test_unusable_input_meshes_fail_before_training(prompts: Path, tmp_path: Path, scale: list[float], offset: float,
                                                    text: str) -> None:
    mesh = _box(tmp_path / "in.ply", scale, offset)
    out = tmp_path / "r"
    res = runner.invoke(app, ["edit", str(mesh), str(prompts), "--preset", "tiny", "--out", str(out)])
    one_line_error(res, text)  # not "degenerate (zero size)", nor an export failure after training
    assert not out.exists()
