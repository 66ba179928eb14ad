"""Explicit part parameters of the toy families: exact agreement with shapes.py, sides, sampler, spreads."""

from __future__ import annotations

import math

import pytest
import torch

from a3d_mesh.toy import shapes
from a3d_mesh.toy.structure import (BACK_SIDES, HAS_BACK, PARAMS, RANGES, SIDE_YAW, Structure, build_structure,
                                    from_toy, quarter_turn, sample_structure, shared_stats, shared_values, spread,
                                    template_structure)


@pytest.mark.parametrize("family", shapes.FAMILIES)
def test_from_toy_reproduces_shapes_build_exactly(family: str) -> None:
    g = torch.Generator().manual_seed(3)
    for obj in [shapes.template(family)] + [shapes.sample_object(family, g) for _ in range(4)]:
        s = from_toy(family, obj.params)
        v, f = build_structure(s)
        assert v.dtype == torch.float32 and f.dtype == torch.int64
        assert v.shape == obj.verts.shape and torch.equal(f, obj.faces)
        assert (v - obj.verts).abs().max() <= 1e-6
        for k, (lo, hi) in RANGES[family].items():  # shapes.py's objects are members of the wider ranges
            assert lo <= s.params[k] <= hi, k


def test_from_toy_constants() -> None:
    p = {"width": 1.6, "depth": 0.9, "seat_h": 0.9, "leg": 0.1, "thick": 0.09}
    assert from_toy("table", p).params["leg_inset"] == pytest.approx(0.1)  # 0.05 in from the edge, centre 0.05 more
    stool = from_toy("stool", {"radius": 0.4, "seat_h": 1.0, "leg": 0.1, "thick": 0.1}).params
    assert stool["leg_radius"] == pytest.approx(0.28) and stool["leg_angle"] == 0.0


@pytest.mark.parametrize("side", BACK_SIDES)
def test_back_side_is_an_exact_quarter_turn_and_the_back_is_there(side: str) -> None:
    s = template_structure("chair")
    v0, f0 = build_structure(s)
    v, f = build_structure(Structure("chair", s.params, side))
    assert torch.equal(f, f0)
    assert torch.allclose(v, shapes.rotate_yaw(v0, SIDE_YAW[side]), atol=1e-5)
    # The back rail is the only part above the seat's top + back_h - rail: its centre is on that side.
    top = v[:, 1] > v[:, 1].max() - s.params["rail"] / 2
    centre = v[top].mean(0)
    inward = s.params["depth"] / 2 - s.params["thick"] / 2
    want = {"-z": (0.0, -inward), "+z": (0.0, inward), "-x": (-inward, 0.0), "+x": (inward, 0.0)}[side]
    assert float(centre[0]) == pytest.approx(want[0], abs=1e-5) and float(centre[2]) == pytest.approx(want[1], abs=1e-5)


def test_quarter_turn_matches_rotate_yaw() -> None:
    p = torch.randn(20, 3, generator=torch.Generator().manual_seed(0))
    for q in range(-2, 5):
        assert torch.allclose(quarter_turn(p, q), shapes.rotate_yaw(p, 90 * q), atol=1e-6)


@pytest.mark.parametrize("family", shapes.FAMILIES)
def test_mesh_heights_follow_the_parameters(family: str) -> None:
    s = sample_structure(family, torch.Generator().manual_seed(1))
    v, _ = build_structure(s)
    p = s.params
    height = p["seat_h"] + p["thick"] + p.get("back_h", 0.0)
    assert float(v[:, 1].max()) == pytest.approx(height / 2, abs=1e-6)  # bbox centred on y = 0
    assert float(v[:, 1].min()) == pytest.approx(-height / 2, abs=1e-6)
    if family == "stool":
        assert float(v[:, 0].abs().max()) == pytest.approx(p["radius"], abs=1e-6)
    else:
        assert float(v[:, 0].max()) == pytest.approx(p["width"] / 2, abs=1e-6)
        assert float(v[:, 2].max()) == pytest.approx(p["depth"] / 2, abs=1e-6)
        # The legs' feet (the lowest vertices) stand leg_inset from the edge (centre line).
        feet = v[v[:, 1] < v[:, 1].min() + 1e-6]
        assert float(feet[:, 0].max()) == pytest.approx(p["width"] / 2 - p["leg_inset"] + p["leg"] / 2, abs=1e-6)


def test_sampler_ranges_quantiles_sides_and_determinism() -> None:
    draw = [sample_structure("bench", torch.Generator().manual_seed(7), BACK_SIDES) for _ in range(2)]
    assert draw[0] == draw[1] and draw[0].params == draw[1].params
    g = torch.Generator().manual_seed(0)
    sides = {sample_structure("chair", g, BACK_SIDES).back_side for _ in range(40)}
    assert sides == set(BACK_SIDES)
    s = sample_structure("table", g, quantiles={"seat_h": 0.0, "width": 1.0})
    assert s.params["seat_h"] == RANGES["table"]["seat_h"][0] and s.params["width"] == RANGES["table"]["width"][1]
    for _ in range(20):
        s = sample_structure("stool", g)
        assert s.back_side == "-z" and all(lo <= s.params[k] <= hi for k, (lo, hi) in RANGES["stool"].items())


def test_the_structure_sampler_draws_only_from_its_generator() -> None:
    # The bundled prior was trained on shapes.sample_object's stream: the new sampler must not
    # touch the global RNG (nor, being separate code, shapes' draws).
    torch.manual_seed(0)
    want = torch.rand(3)
    torch.manual_seed(0)
    sample_structure("chair", torch.Generator().manual_seed(1), BACK_SIDES)
    assert torch.equal(torch.rand(3), want)


def test_stool_leg_angle_turns_the_legs() -> None:
    p = dict(template_structure("stool").params, leg_angle=30.0)
    v, _ = build_structure(Structure("stool", p))
    feet = v[v[:, 1] < v[:, 1].min() + 1e-6]  # the three legs' bottom rings and centres
    r = p["leg_radius"]
    centres = [(r * math.sin(math.radians(a)), r * math.cos(math.radians(a))) for a in (30, 150, 270)]
    for cx, cz in centres:
        d = ((feet[:, 0] - cx) ** 2 + (feet[:, 2] - cz) ** 2).sqrt()
        assert float(d.min()) < 1e-5  # a cap centre exactly there


@pytest.mark.parametrize("family", shapes.FAMILIES)
def test_spread_is_the_uniform_std_and_matches_samples(family: str) -> None:
    sd = spread(family)
    assert set(sd) == set(PARAMS[family])
    for k, (lo, hi) in RANGES[family].items():
        assert sd[k] == pytest.approx((hi - lo) / math.sqrt(12))
    g = torch.Generator().manual_seed(2)
    draws = [sample_structure(family, g) for _ in range(1500)]
    stats = shared_stats(family)
    for k, (mean, std) in stats.items():
        x = torch.tensor([shared_values(family, d.params)[k] for d in draws], dtype=torch.float64)
        assert float(x.mean()) == pytest.approx(mean, abs=0.1 * std), k
        assert float(x.std()) == pytest.approx(std, rel=0.1), k
    assert ("back_h" in stats) == HAS_BACK[family]


def test_invalid_structures_are_refused() -> None:
    p = dict(template_structure("chair").params)
    with pytest.raises(ValueError, match="unknown toy family"):
        Structure("sofa", p)
    with pytest.raises(ValueError, match="back_side"):
        Structure("chair", p, "up")
    with pytest.raises(ValueError, match="missing"):
        Structure("chair", {k: v for k, v in p.items() if k != "rail"})
    with pytest.raises(ValueError, match="unknown toy family"):
        sample_structure("sofa", torch.Generator())
