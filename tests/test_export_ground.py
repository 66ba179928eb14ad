"""Grounding (``export.ground``): each asset stands on y = 0 in its own file, the set's scale and
x/z are kept, and the manifest's ``ground_offset_m`` puts every asset back where the set had it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
import trimesh

from a3d_mesh.run import export_set
from a3d_mesh.config import ConfigError, RunConfig, merge
from a3d_mesh.export import SetTransform
from a3d_mesh.export.frame import grounded, set_transform
from a3d_mesh.prompts import PromptSet


def box(extents: list[float], centre: list[float]) -> trimesh.Trimesh:
    b = trimesh.creation.box(extents=extents)
    b.apply_translation(centre)
    return b


def mesh_of(*parts: trimesh.Trimesh) -> tuple[torch.Tensor, torch.Tensor]:
    """World-frame ``(verts [V,3] float32, faces [F,3] int64)`` of the parts side by side (not welded)."""
    m = trimesh.util.concatenate(list(parts))
    return torch.tensor(m.vertices, dtype=torch.float32), torch.tensor(m.faces, dtype=torch.int64)


@dataclass
class MeshSet:
    """A set whose model is a fixed mesh per object (code e_k) and one for any code field (a
    hybrid): what :func:`export_set` needs of a :class:`~a3d_mesh.run.TrainedSet`."""

    objects: dict[str, tuple[torch.Tensor, torch.Tensor]]
    hybrid: tuple[torch.Tensor, torch.Tensor] | None = None
    cfg: RunConfig = field(default_factory=RunConfig)
    device: torch.device = torch.device("cpu")

    def __post_init__(self) -> None:
        names = list(self.objects)
        self.prompts = PromptSet(names, [f"a {n}" for n in names], ["" for _ in names])
        self.cfg = merge(self.cfg, {"export": {"texture_size": 64}})

    @property
    def n(self) -> int:
        return len(self.objects)

    def code(self, k: int) -> torch.Tensor:
        return torch.eye(self.n)[k]

    def mesh(self, u: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if callable(u):
            assert self.hybrid is not None
            return self.hybrid
        return list(self.objects.values())[int(u.argmax())]

    def color_fn(self, u: Any) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda p: torch.full_like(p, 0.5)


def glb_verts(path: Path) -> np.ndarray:
    return np.asarray(list(trimesh.load(path, process=False).geometry.values())[0].vertices, np.float64)


def glb_positions(path: Path) -> np.ndarray:
    """The GLB's distinct vertex positions ``[P, 3]``, sorted: the geometry, whatever UV seams
    xatlas cut (two unwraps of one mesh may split its vertices differently)."""
    return np.unique(glb_verts(path), axis=0)


def two_heights() -> MeshSet:
    """A table standing on the set's floor and a bench whose legs end 0.3 world units above it,
    with a debris speck under the bench that cleanup drops (it must not hold the bench up)."""
    speck = trimesh.creation.icosphere(subdivisions=1, radius=0.01)
    speck.apply_translation([-0.3, -0.45, 0.0])
    return MeshSet({"table": mesh_of(box([0.6, 0.8, 0.5], [0.3, -0.1, 0.1])),
                    "bench": mesh_of(box([0.5, 0.4, 0.3], [-0.3, 0.0, -0.2]), speck)})


def export(ms: MeshSet, out: Path, ground: str, **kw: Any) -> dict[str, dict[str, Any]]:
    ms.cfg = merge(ms.cfg, {"export": {"ground": ground}})
    return {r["name"]: r for r in export_set(ms, out, **kw)}


def test_each_grounds_every_asset_and_keeps_the_set_frame(tmp_path: Path) -> None:
    ms = two_heights()
    each, flat = export(ms, tmp_path / "each", "each"), export(ms, tmp_path / "set", "set")
    for name in ("table", "bench"):
        v_each = glb_positions(tmp_path / "each" / each[name]["files"]["glb"])
        v_set = glb_positions(tmp_path / "set" / flat[name]["files"]["glb"])
        assert v_each[:, 1].min() == pytest.approx(0.0, abs=1e-6)  # its base on the ground
        assert v_each.shape == v_set.shape
        np.testing.assert_array_equal(v_each[:, [0, 2]], v_set[:, [0, 2]])  # same x/z and scale
        # The recorded offset reassembles the set: y_set = y_file - ground_offset_m.
        np.testing.assert_allclose(v_each[:, 1] - each[name]["ground_offset_m"], v_set[:, 1], atol=1e-6)
        assert each[name]["transform"]["scale"] == flat[name]["transform"]["scale"]
        assert flat[name]["ground_offset_m"] == 0.0
    # The table holds the set's lowest kept point; the bench floated 0.3 world units above it.
    scale = flat["table"]["transform"]["scale"]
    assert each["table"]["ground_offset_m"] == pytest.approx(0.0, abs=1e-9)
    assert each["bench"]["ground_offset_m"] == pytest.approx(-0.3 * scale, abs=1e-6)
    assert "ground_offset_m" in each["bench"]["transform"]["convention"]


def test_set_keeps_the_shared_ground(tmp_path: Path) -> None:
    ms = two_heights()
    recs = export(ms, tmp_path, "set")
    world = [v.numpy() for v, _ in ms.objects.values()]
    tf = set_transform(world, height_m=ms.cfg.export.height_m)
    assert all(r["transform"] == tf.to_dict() for r in recs.values())
    table, bench = (glb_verts(tmp_path / recs[n]["files"]["glb"]) for n in ("table", "bench"))
    assert table[:, 1].min() == pytest.approx(0.0, abs=1e-6)  # the table holds the set's lowest point
    assert bench[:, 1].min() == pytest.approx(0.3 * tf.scale, abs=1e-6)  # floats, as the set has it


def test_an_explicit_frame_is_never_grounded(tmp_path: Path) -> None:
    """Edit runs with --keep-input-frame hand export_set the input's own frame: kept exactly."""
    frame = SetTransform(scale=3.0, translation=(10.0, 2.0, -3.0))
    recs = export(two_heights(), tmp_path, "each", transform=frame)
    for r in recs.values():
        assert r["transform"] == frame.to_dict() and r["ground_offset_m"] == 0.0
    bench = glb_verts(tmp_path / recs["bench"]["files"]["glb"])
    assert bench[:, 1].min() == pytest.approx(3.0 * -0.2 + 2.0, abs=1e-5)


def test_grounded_transform_arithmetic() -> None:
    tf = SetTransform(scale=2.0, translation=(0.0, 0.5, 0.0))
    verts = np.array([[1.0, 0.25, -1.0], [0.0, 1.0, 2.0]])
    shifted, offset = grounded(tf, verts)
    assert offset == pytest.approx(-1.0) and shifted.translation == (0.0, -0.5, 0.0)
    assert shifted.scale == tf.scale and shifted.apply(verts)[:, 1].min() == 0.0
    np.testing.assert_allclose(shifted.apply(verts) - [0.0, offset, 0.0], tf.apply(verts), atol=1e-7)


def test_ground_config_values() -> None:
    assert RunConfig().export.ground == "each"
    with pytest.raises(ConfigError, match="export.ground"):
        merge(RunConfig(), {"export": {"ground": "floor"}})


def test_previews_show_the_pieces_export_keeps() -> None:
    """A preview is a picture of the file: debris that cleanup drops is not drawn either."""
    from a3d_mesh.run import render_views

    speck = trimesh.creation.icosphere(subdivisions=1, radius=0.04)  # ~2 % of the box's area
    speck.apply_translation([0.0, -0.45, 0.0])
    bench = box([0.5, 0.4, 0.3], [0.0, 0.0, 0.0])
    with_speck, clean = MeshSet({"bench": mesh_of(bench, speck)}), MeshSet({"bench": mesh_of(bench)})
    shown = render_views(with_speck, with_speck.code(0), 2, 64)
    assert torch.equal(shown, render_views(clean, clean.code(0), 2, 64))
    with_speck.cfg = merge(with_speck.cfg, {"export": {"min_component_area": 0.0}})  # keep every piece
    assert not torch.equal(render_views(with_speck, with_speck.code(0), 2, 64), shown)  # the speck is in view
