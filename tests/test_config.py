"""Presets and dot-list overrides are validated against the typed configs."""

from pathlib import Path

import pytest

from a3d_mesh.config import ConfigError, GuidanceConfig, dump_config, load_config, parse_override, preset_names
from a3d_mesh.config_ranges import MAX_SEED


def test_bundled_presets_load() -> None:
    names = preset_names()
    assert {"tiny", "default", "fast", "quality"} <= set(names)
    for n in names:
        cfg = load_config(n)
        assert cfg.refine.steps >= 0
    assert load_config("default").guidance.model == GuidanceConfig().model  # the default preset's prior is the default
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
    ("coarse.min_opacity_weight=-1", "coarse.min_opacity_weight must be a finite number >= 0"),
    ("refine.init_opacity=0", "refine.init_opacity must be in \\(0, 1\\)"),
    ("refine.min_opacity=-0.1", "refine.min_opacity must be in \\[0, 1\\)"),
    ("refine.min_opacity_weight=-1", "refine.min_opacity_weight must be a finite number >= 0"),
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


# Values that used to pass and fail later (a ZeroDivisionError after training, a 320 GB allocation,
# an overflowing seed after the run folder was written) or never: each is refused by load_config
# with one line naming the key, the allowed range and the value.
@pytest.mark.parametrize("override, message", [
    ("preview.views=0", "config key preview.views must be a whole number in 1..64, got 0"),
    ("preview.sweep_frames=1", "config key preview.sweep_frames must be a whole number in 2..1000, got 1"),
    ("preview.resolution=4", "config key preview.resolution must be a whole number in 8..4096, got 4"),
    ("coarse.samples_per_ray=0", "config key coarse.samples_per_ray must be a whole number in 1..4096, got 0"),
    ("coarse.resolution=100000", "config key coarse.resolution must be a whole number in 8..4096, got 100000"),
    ("refine.resolution=0", "config key refine.resolution must be a whole number in 8..4096, got 0"),
    ("refine.sds.resolution=8192", "config key refine.sds.resolution must be a whole number in 8..4096, got 8192"),
    ("coarse.occupancy_every=0", "config key coarse.occupancy_every must be a whole number in 1..10000000, got 0"),
    ("refine.init_views=0", "config key refine.init_views must be a whole number in 1..64, got 0"),
    ("camera.views_per_step=0", "config key camera.views_per_step must be a whole number in 1..64, got 0"),
    ("checkpoint_every=0", "config key checkpoint_every must be a whole number in 1..10000000, got 0"),
    ("export.target_faces=0",
     "config key export.target_faces must be empty (no budget) or a whole number in 4..2147483647, got 0"),
    ("export.texture_size=200000", "config key export.texture_size must be a whole number in 16..16384, got 200000"),
    ("export.texture_size=8", "config key export.texture_size must be a whole number in 16..16384, got 8"),
    ("export.height_m=0", "config key export.height_m must be a finite number > 0, got 0.0"),
    ("export.uv_timeout_s=-1", "config key export.uv_timeout_s must be a finite number > 0, got -1.0"),
    ("export.formats=[]", "export.formats: no format given"),
    ("export.min_component_area=1.5", "config key export.min_component_area must be in [0, 1], got 1.5"),
    ("camera.fov_range=[90, 10]",
     "config key camera.fov_range must be [low, high] with low <= high, within (0, 180), got [90.0, 10.0]"),
    ("camera.fov_range=[10, 180]", "config key camera.fov_range must be [low, high] with low <= high, within (0, 180)"),
    ("camera.distance_range=[0, 0]",
     "config key camera.distance_range must be [low, high] with low <= high, within (0.1, 100), got [0.0, 0.0]"),
    ("camera.elevation_range=[-90, 30]",
     "config key camera.elevation_range must be [low, high] with low <= high, within (-90, 90)"),
    ("camera.near=0", "config key camera.near must be a finite number > 0, got 0.0"),
    ("camera.eval_fov=0", "config key camera.eval_fov must be in (0, 180), got 0.0"),
    ("camera.eval_distance=0.05", "config key camera.eval_distance must be in (0.1, 100), got 0.05"),
    ("refine.steps=100000000000000000000000",
     "config key refine.steps must be a whole number in 0..10000000, got 100000000000000000000000"),
    ("coarse.steps=-1", "config key coarse.steps must be a whole number in 0..10000000, got -1"),
    ("refine.steps=1e23", "config key 'refine.steps': 1e+23 is not a int"),
    ("seed=-1", f"config key seed must be a whole number in 0..{MAX_SEED}, got -1"),
    (f"seed={MAX_SEED + 1}", f"config key seed must be a whole number in 0..{MAX_SEED}, got {MAX_SEED + 1}"),
    ("coarse.lr_grid=-0.1", "config key coarse.lr_grid must be a finite number >= 0, got -0.1"),
    ("refine.lr=.nan", "config key refine.lr must be a finite number >= 0, got nan"),
    ("refine.normal_consistency_weight=.inf",
     "config key refine.normal_consistency_weight must be a finite number >= 0, got inf"),
    ("guidance.target_weight_depth=-1", "config key guidance.target_weight_depth must be a finite number >= 0"),
    ("coarse.sds.guidance_scale=0", "config key coarse.sds.guidance_scale must be a finite number > 0, got 0.0"),
    ("refine.sds.t_max=[1.5, 0.5]",
     "config key refine.sds.t_max must be a schedule of values in [0, 1], got [1.5, 0.5, 0.0, 1.0]"),
    ("refine.sds.grad_clip=0", "config key refine.sds.grad_clip must be empty (no clipping) or a finite number > 0, got 0.0"),
    ("coarse.grid.n_features_per_level=3", "config key coarse.grid.n_features_per_level must be one of [1, 2, 4, 8], got 3"),
    ("refine.grid.log2_hashmap_size=30", "config key refine.grid.log2_hashmap_size must be a whole number in 4..24, got 30"),
    ("coarse.grid.per_level_scale=4", "config key coarse.grid must be a grid whose finest level"),
    ("coarse.hidden=0", "config key coarse.hidden must be a whole number in 1..1024, got 0"),
    ("refine.init_threshold=high", "config key 'refine.init_threshold': 'high' is not a float or 'auto'"),
    ("sampling.p_corner_i=-0.5", "config key sampling.p_corner_i must be in [0, 1], got -0.5"),
    ("sampling.p_corner_i=0.5", "must sum to 1, got 0.5 + 0.25 + 0.5"),
    ("bound=0", "config key bound must be a finite number > 0, got 0.0"),
    ("coarse.blob_radius=0", "config key coarse.blob_radius must be a finite number > 0, got 0.0"),
    ("coarse.albedo_only_prob=2", "config key coarse.albedo_only_prob must be in [0, 1], got 2.0"),
    ("coarse.lr_grid=1" + "0" * 400, "config key 'coarse.lr_grid': a whole number too large for a float"),
    ("refine.sds.t_min=1" + "0" * 400, "config key 'refine.sds.t_min': int too large to convert to float"),
    ("seed=1" + "0" * 5000, "config key 'seed': '1000"),  # past Python's int digit limit: read as text
])
def test_out_of_range_values_are_one_line_errors(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config("tiny", [override])
    assert message in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_values_at_the_edges_of_the_ranges_load() -> None:
    cfg = load_config("tiny", ["seed=" + str(MAX_SEED), "preview.views=1", "preview.sweep_frames=2",
                               "coarse.samples_per_ray=1", "export.target_faces=4", "export.texture_size=16384",
                               "camera.fov_range=[45, 45]", "camera.distance_range=[0.2, 99]", "refine.steps=0",
                               "refine.init_threshold=0.3", "export.target_faces=null"])
    assert cfg.seed == MAX_SEED and cfg.export.target_faces is None and cfg.camera.fov_range == (45.0, 45.0)


def test_non_utf8_preset_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("guidance:\n  negative_prompt: 'caf\u00e9'\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"^preset '.*latin1.yaml' is not UTF-8 text \(byte \d+\); save it as UTF-8$"):
        load_config(str(bad))
    saved = tmp_path / "run" / "config.yaml"  # a run's saved config is read the same way (resume, export)
    saved.parent.mkdir()
    saved.write_bytes(b"seed: 1\n# \xff\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(str(saved))


def test_bundled_preset_names_win_over_files_in_the_working_directory(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "toy").mkdir()
    (tmp_path / "tiny").write_text("seed: 5\n")
    (tmp_path / "mine").write_text("seed: 6\n")
    assert load_config("toy") == load_config(str(Path(__file__).parents[1] / "configs" / "toy.yaml"))
    assert load_config("tiny").guidance.model == "tiny" and load_config("tiny").seed == 0
    assert load_config("./tiny").seed == 5  # a path means the file (and it has no model key: the default's)
    with pytest.raises(ConfigError, match=r"^preset ./toy is not a file$"):
        load_config("./toy")
    with pytest.raises(ConfigError, match=r"unknown preset 'mine' \(.*\); for the file in this folder write ./mine$"):
        load_config("mine")
    assert load_config("./mine").seed == 6
    with pytest.raises(ConfigError, match=r"^preset file not found: nothere.yaml$"):
        load_config("nothere.yaml")
    with pytest.raises(ConfigError, match=r"^preset file not found: toy.yaml \(the bundled one is --preset toy\)$"):
        load_config("toy.yaml")


def test_unreadable_yaml_is_one_line(tmp_path: Path) -> None:
    for name, text, message in (("digits.yaml", "seed: 1" + "0" * 5000, "Exceeds the limit"),
                                ("deep.yaml", "a: " + "[" * 5000 + "]" * 5000, "not valid YAML")):
        (tmp_path / name).write_text(text)
        with pytest.raises(ConfigError, match=message) as e:
            load_config(str(tmp_path / name))
        assert "\n" not in str(e.value)


def test_a_run_saved_before_view_prompts_resumes_without_them(tmp_path) -> None:
    """Resume is exact only if an old run keeps training as it was trained: its saved config has no
    guidance.view_prompts, so it loads with view prompts off; a run saved now keeps its setting."""
    import yaml

    from a3d_mesh.config import dump_config, load_config, load_run_config

    data = yaml.safe_load(dump_config(load_config("tiny")))
    assert data["guidance"]["view_prompts"]["enabled"] is True
    (tmp_path / "new.yaml").write_text(yaml.safe_dump(data))
    assert load_run_config(tmp_path / "new.yaml").guidance.view_prompts.enabled is True
    del data["guidance"]["view_prompts"]
    (tmp_path / "old.yaml").write_text(yaml.safe_dump(data))
    assert load_run_config(tmp_path / "old.yaml").guidance.view_prompts.enabled is False
    assert load_config(str(tmp_path / "old.yaml")).guidance.view_prompts.enabled is True  # a preset: defaults


def test_a_run_saved_before_grounding_keeps_the_set_ground(tmp_path) -> None:
    """Exports of an old run (re-export, later hybrids) stay in the frame its first exports used."""
    import yaml

    from a3d_mesh.config import dump_config, load_config, load_run_config

    data = yaml.safe_load(dump_config(load_config("tiny")))
    assert data["export"]["ground"] == "each"
    del data["export"]["ground"]
    (tmp_path / "old.yaml").write_text(yaml.safe_dump(data))
    assert load_run_config(tmp_path / "old.yaml").export.ground == "set"


def test_relative_distances_are_checked_as_the_distances_they_give() -> None:
    """With ``camera.relative_distance`` the range is in units of 1 / tan(fov / 2): r = 0.01 at a
    40-70 deg fov is a camera 0.014 from the origin, inside camera.near (0.1)."""
    cfg = load_config("tiny", ["camera.relative_distance=true", "camera.fov_range=[40, 70]",
                               "camera.distance_range=[1.0, 1.4]"])
    assert cfg.camera.relative_distance is True and cfg.camera.distance_range == (1.0, 1.4)
    with pytest.raises(ConfigError) as e:
        load_config("tiny", ["camera.relative_distance=true", "camera.fov_range=[40, 70]",
                             "camera.distance_range=[0.01, 1]"])
    assert str(e.value) == ("config key camera.distance_range must be [low, high] with 0 < low <= high, giving "
                            "distances low / tan(fov / 2) within (camera.near, camera.far), got [0.01, 1.0]")
    with pytest.raises(ConfigError, match="camera.relative_distance"):
        load_config("tiny", ["camera.relative_distance=3"])
