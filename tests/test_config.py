"""Presets and dot-list overrides are validated against the typed configs."""

from pathlib import Path

import pytest

from a3d_mesh.config import ConfigError, dump_config, load_config, parse_override, preset_names


def test_bundled_presets_load() -> None:
    names = preset_names()
    assert {"tiny", "default", "fast", "quality"} <= set(names)
    for n in names:
        cfg = load_config(n)
        assert cfg.refine.steps >= 0
    assert load_config("default").guidance.model == "stabilityai/stable-diffusion-2-1-base"
    assert load_config("tiny").guidance.model == "tiny"


def test_overrides_apply_with_types() -> None:
    cfg = load_config("tiny", ["refine.steps=300", "coarse.lr_grid=0.5", "export.formats=glb,obj",
                               "camera.fov_range=[30, 60]", "refine.sds.t_max=[0.9, 0.4]"])
    assert cfg.refine.steps == 300 and cfg.coarse.lr_grid == 0.5
    assert cfg.export.formats == ["glb", "obj"]
    assert cfg.camera.fov_range == (30.0, 60.0)
    assert cfg.refine.sds.t_max(0.0) == pytest.approx(0.9) and cfg.refine.sds.t_max(1.0) == pytest.approx(0.4)


@pytest.mark.parametrize("override, message", [
    ("refine.stepz=3", "unknown config key 'refine.stepz' \\(did you mean 'refine.steps'\\?\\)"),
    ("nope.steps=3", "unknown config key 'nope'"),
    ("refine.steps=many", "config key 'refine.steps'"),
    ("refine.steps=2.5", "config key 'refine.steps'"),
    ("guidance.kind=magic", "config key 'guidance.kind'"),
    ("refine.steps", "not of the form key.path=value"),
    ("export.formats=glb,stl", "unknown format 'stl'"),
    ("refine.sds.weighting=cubic", "weighting"),
    ("refine.tet_resolution=4", "tet_resolution"),
    ("coarse.min_opacity=1.5", "coarse.min_opacity must be in \\[0, 1\\)"),
    ("coarse.min_opacity_weight=-1", "coarse.min_opacity_weight must be >= 0"),
    ("refine.init_opacity=0", "refine.init_opacity must be in \\(0, 1\\)"),
    ("refine.min_opacity=-0.1", "refine.min_opacity must be in \\[0, 1\\)"),
    ("refine.min_opacity_weight=-1", "refine.min_opacity_weight must be >= 0"),
])
def test_bad_overrides_name_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config("tiny", [override])


def test_unknown_preset_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        load_config("huge")
    bad = tmp_path / "bad.yaml"
    bad.write_text("refine: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(bad))


def test_dumped_config_loads_back_identically(tmp_path: Path) -> None:
    cfg = load_config("tiny", ["seed=7", "refine.sds.t_min=[0.5, 0.1, 0.2, 0.9]"])
    path = tmp_path / "config.yaml"
    path.write_text(dump_config(cfg))
    assert load_config(str(path)) == cfg


def test_exponent_floats_read_as_numbers(tmp_path: Path) -> None:
    """PyYAML alone reads ``1e4`` as a string; overrides and preset files must take it as a float."""
    cfg = load_config("tiny", ["coarse.min_opacity_weight=1e4", "coarse.lr_grid=3e-3", "refine.sds.t_max=[9.8e-1, 5E-1]"])
    assert cfg.coarse.min_opacity_weight == 1e4 and cfg.coarse.lr_grid == pytest.approx(3e-3)
    assert cfg.refine.sds.t_max(0.0) == pytest.approx(0.98) and cfg.refine.sds.t_max(1.0) == pytest.approx(0.5)
    preset = tmp_path / "mine.yaml"
    preset.write_text("coarse:\n  lr_mlp: 1e-3\n  min_opacity_weight: 2.5e+3\n")
    cfg = load_config(str(preset))
    assert cfg.coarse.lr_mlp == pytest.approx(1e-3) and cfg.coarse.min_opacity_weight == 2500.0
    assert parse_override("guidance.negative_prompt=e5") == {"guidance": {"negative_prompt": "e5"}}


def test_parse_override_nests() -> None:
    assert parse_override("a.b.c=1") == {"a": {"b": {"c": 1}}}
