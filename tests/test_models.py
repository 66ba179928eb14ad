"""Models saved and loaded with their own config (a3d_mesh.models), and the run folder's
models/ read back without training code."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from a3d_mesh.config import load_config
from a3d_mesh.errors import CheckpointError
from a3d_mesh.fields import HashGridConfig, NeRFField
from a3d_mesh.geometry import DMTetField
from a3d_mesh.models import CONFIG_NAME, WEIGHTS_NAME
from a3d_mesh.errors import RunError
from a3d_mesh.run import TrainedSet, model_configs, save_models
from tests.test_export_failures import exported  # noqa: F401 - a tiny run saved before models/ existed

GRID = HashGridConfig(n_levels=4, n_features_per_level=2, log2_hashmap_size=10, base_resolution=4)


def test_nerf_field_round_trip_gives_the_same_outputs(tmp_path: Path) -> None:
    m = NeRFField(3, GRID, hidden=16, blob_density=4.0, blob_radius=0.4, density_activation="trunc_exp")
    m.save(tmp_path / "color")
    cfg = json.loads((tmp_path / "color" / CONFIG_NAME).read_text())
    assert cfg["class"] == "NeRFField" and cfg["grid"]["n_levels"] == 4 and cfg["density_activation"] == "trunc_exp"
    assert "backend" not in cfg and "seed" not in cfg  # runtime choices, not architecture
    back = NeRFField.load(tmp_path / "color")
    x, u = torch.rand(64, 3) * 2 - 1, torch.tensor([0.2, 0.3, 0.5])
    for a, b in zip(m(x, u), back(x, u)):
        assert torch.equal(a, b)
    assert back.blob_radius == 0.4 and not back.training


def test_dmtet_field_round_trip_gives_the_same_mesh(tmp_path: Path) -> None:
    m = DMTetField(2, 12, GRID, hidden=16, bound=1.5)
    m.save(tmp_path / "dmtet")
    back = DMTetField.load(tmp_path / "dmtet")
    u = torch.tensor([1.0, 0.0])
    (v1, f1), (v2, f2) = m.extract(u), back.extract(u)
    assert torch.equal(v1, v2) and torch.equal(f1, f2) and back.bound == 1.5 and back.resolution == 12


def test_load_keeps_the_callers_random_stream(tmp_path: Path) -> None:
    NeRFField(2, GRID, hidden=8).save(tmp_path / "m")
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    NeRFField.load(tmp_path / "m")
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("damage, message", [
    ("no_config", "has no config.json"),
    ("no_weights", "has no model.safetensors"),
    ("bad_json", "is not valid JSON"),
    ("other_class", "holds a DMTetField model, not a NeRFField"),
    ("unknown_key", "does not describe a NeRFField"),
    ("truncated", "does not fit its config.json"),
    ("other_shape", "does not fit its config.json"),
])
def test_a_damaged_or_foreign_model_folder_is_one_line(tmp_path: Path, damage: str, message: str) -> None:
    folder = tmp_path / "m"
    NeRFField(2, GRID, hidden=8).save(folder)
    cfg_path, w_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    cfg = json.loads(cfg_path.read_text())
    if damage == "no_config":
        cfg_path.unlink()
    elif damage == "no_weights":
        w_path.unlink()
    elif damage == "bad_json":
        cfg_path.write_text("{not json")
    elif damage == "other_class":
        cfg_path.write_text(json.dumps({**cfg, "class": "DMTetField"}))
    elif damage == "unknown_key":
        cfg_path.write_text(json.dumps({**cfg, "colour_depth": 3}))
    elif damage == "truncated":
        w_path.write_bytes(w_path.read_bytes()[:100])
    elif damage == "other_shape":
        cfg_path.write_text(json.dumps({**cfg, "hidden": 16}))
    with pytest.raises(CheckpointError) as e:
        NeRFField.load(folder)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_model_configs_build_the_architecture_the_stages_train() -> None:
    cfg = load_config("tiny")
    conf = model_configs(cfg, 3)
    assert conf["dmtet"]["resolution"] == cfg.refine.tet_resolution and conf["color"]["hidden"] == cfg.coarse.hidden
    d, c = DMTetField.from_config(conf["dmtet"]), NeRFField.from_config(conf["color"])
    assert d.n_codes == c.n_codes == 3 and d.config["grid"]["n_levels"] == cfg.refine.grid.n_levels


def test_a_run_is_read_from_its_models_as_from_its_checkpoint(exported: Path, tmp_path: Path) -> None:  # noqa: F811
    """models/ (what a finished run holds, and what export and hybrid then read) gives the same
    set as the refine checkpoint it was saved from (what older runs and stopped runs have)."""
    old = TrainedSet.load(exported)
    run = tmp_path / "run"
    shutil.copytree(exported, run)
    save_models(run, old.dmtet, old.color)
    (run / "checkpoints" / "refine.pt").unlink()  # so the set can only come from models/
    new = TrainedSet.load(run)
    for k in range(new.n):
        (v1, f1), (v2, f2) = new.mesh(new.code(k)), old.mesh(old.code(k))
        assert torch.equal(v1, v2) and torch.equal(f1, f2)
    (run / "models" / "color" / CONFIG_NAME).unlink()  # a half-saved models/ and no checkpoint
    with pytest.raises(RunError, match="is not a trained run"):
        TrainedSet.load(run)
