"""Hybrid specs (parsing, every rejected form), anchor files, and the code fields u(x) they define."""

import json
from pathlib import Path

import pytest
import torch

from a3d_mesh.hybrid import HybridError, Region, code_field, load_anchors, parse_all, parse_hybrid

NAMES = ["dog", "cat", "fox"]


def _on_simplex(u: torch.Tensor) -> None:
    assert torch.isfinite(u).all()
    assert (u >= 0).all()
    torch.testing.assert_close(u.sum(dim=-1), torch.ones(u.shape[0], dtype=u.dtype), atol=1e-5, rtol=0)


def _random_points(n: int, seed: int, scale: float = 1.2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 3, generator=g) * 2 - 1) * scale


# ---------------------------------------------------------------- parsing


def test_name_and_rest_forms() -> None:
    s = parse_hybrid("dogcat=dog@x>0,cat", NAMES)
    assert s.name == "dogcat" and s.text == "dogcat=dog@x>0,cat" and s.anchors is None
    assert [(p.source, p.name) for p in s.parts] == [(0, "dog"), (1, "cat")]
    assert s.parts[0].region == Region("halfspace", axis=0, sign=1, value=0.0)
    assert s.parts[1].region.kind == "all"


def test_index_sources_and_ge_le_forms() -> None:
    s = parse_hybrid(" h = 2@y<=-0.25 , 0@z>=.5, 1 ", NAMES, blend=0.05)
    assert [p.source for p in s.parts] == [2, 0, 1]
    assert s.parts[0].region == Region("halfspace", axis=1, sign=-1, value=-0.25)
    assert s.parts[1].region == Region("halfspace", axis=2, sign=1, value=0.5)
    assert s.blend == 0.05


def test_box_form_between_other_parts() -> None:
    s = parse_hybrid("h=cat@box:-0.5,-0.5,-0.5,0.5,0.5,0.5,dog@x<-0.6,fox", NAMES)
    assert [p.name for p in s.parts] == ["cat", "dog", "fox"]
    assert s.parts[0].region == Region("box", lo=(-0.5, -0.5, -0.5), hi=(0.5, 0.5, 0.5))


def test_names_win_over_indices_and_to_dict() -> None:
    s = parse_hybrid("h=1@x>0,0", ["0", "1"])  # assets named by digits: names resolve first
    assert [p.source for p in s.parts] == [1, 0]
    d = s.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["parts"][0]["region"] == "x>0" and d["parts"][1]["region"] == "rest" and d["spec"] == "h=1@x>0,0"


@pytest.mark.parametrize("text, message", [
    ("dog@x>0,cat", "missing '='"),
    ("=dog@x>0,cat", "empty hybrid name"),
    ("Dog Cat=dog@x>0,cat", "bad hybrid name 'Dog Cat'"),
    ("_h=dog@x>0,cat", "bad hybrid name '_h'"),
    ("cat=dog@x>0,cat", "hybrid name 'cat' clashes with an asset"),
    ("h=wolf@x>0,cat", "unknown source 'wolf'"),
    ("h=3@x>0,cat", "unknown source '3'"),
    ("h=-1@x>0,cat", "unknown source '-1'"),
    ("h=dog@w>0,cat", "malformed region 'w>0'"),
    ("h=dog@x=0,cat", "malformed region 'x=0'"),
    ("h=dog@x>nan,cat", "malformed region 'x>nan'"),
    ("h=dog@x>,cat", "malformed region 'x>'"),
    ("h=dog@,cat", "malformed region ''"),
    ("h=dog@x>0@y>0,cat", "malformed region 'x>0@y>0'"),
    ("h=dog@box:0,0,0,1,1,cat", "malformed region 'box:0,0,0,1,1'"),
    ("h=dog@box:0,0,0,1,1,1,1,cat", "source 'cat' \\(asset 1\\) is used twice"),  # a 7th number is index source 1
    ("h=dog@box:0,0,0,a,1,1,cat", "malformed region 'box:0,0,0'"),
    ("h=dog@box:0,0.5,0,1,0.5,1,cat", "min >= max on y"),
    ("h=dog@box:1,0,0,0,1,1,cat", "min >= max on x"),
    ("h=dog@x>1,cat", "empty region 'x>1'"),
    ("h=dog@z<-1.5,cat", "empty region 'z<-1.5'"),
    ("h=dog@box:1.1,0,0,2,1,1,cat", "empty region 'box:1.1,0,0,2,1,1'"),
    ("h=dog@x>-1,cat", "covers the whole of the scene cube"),
    ("h=dog@box:-2,-2,-2,2,2,2,cat", "covers the whole of the scene cube"),
    ("h=dog@x>0", "at least 2 parts"),
    ("h=dog", "at least 2 parts"),
    ("h=", "empty part"),
    ("h=dog@x>0,,cat", "empty part"),
    ("h=dog@x>0,cat,", "empty part"),
    ("h=@x>0,cat", "has no source"),
    ("h=dog@x>0,0@x<0", "source '0' \\(asset 0\\) is used twice"),
    ("h=dog@x>0,cat,fox", "two parts without a region \\('cat' and 'fox'\\)"),
])
def test_rejected_specs(text: str, message: str) -> None:
    with pytest.raises(HybridError, match=message) as info:
        parse_hybrid(text, NAMES)
    assert "\n" not in str(info.value)


def test_rejected_blend_and_duplicate_hybrid_names() -> None:
    with pytest.raises(HybridError, match="blend width must be a finite number >= 0, got -0.1"):
        parse_hybrid("h=dog@x>0,cat", NAMES, blend=-0.1)
    with pytest.raises(HybridError, match="hybrid name 'h' is used twice"):
        parse_all(["h=dog@x>0,cat", "h=cat@y>0,fox"], [], NAMES)
    assert [s.name for s in parse_all(["a=dog@x>0,cat", "b=cat@y>0,fox"], [], NAMES)] == ["a", "b"]


def test_parse_all_rejects_a_spec_and_an_anchor_file_of_one_name(tmp_path: Path) -> None:
    anchors = [{"point": [0.5, 0, 0], "source": "dog"}, {"point": [-0.5, 0, 0], "source": "cat"}]
    (tmp_path / "h.json").write_text(json.dumps(anchors))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "h.yaml").write_text(json.dumps(anchors))  # JSON is YAML
    with pytest.raises(HybridError, match="hybrid name 'h' is used twice"):
        parse_all(["h=dog@x>0,cat"], [tmp_path / "h.json"], NAMES)
    with pytest.raises(HybridError, match="hybrid name 'h' is used twice"):
        parse_all([], [tmp_path / "h.json", tmp_path / "sub" / "h.yaml"], NAMES)
    both = parse_all(["a=dog@x>0,cat"], [tmp_path / "h.json"], NAMES, blend=0.2)
    assert [(s.name, s.anchors is not None, s.blend) for s in both] == [("a", False, 0.2), ("h", True, 0.2)]


def test_empty_region_follows_bound() -> None:
    parse_hybrid("h=dog@x>1.5,cat", NAMES, bound=2.0)
    with pytest.raises(HybridError, match="empty region"):
        parse_hybrid("h=dog@x>1.5,cat", NAMES, bound=1.0)


# ---------------------------------------------------------------- regions


def test_signed_distances() -> None:
    pts = torch.tensor([[0.0, 0.0, 0.0], [0.3, 0.0, 0.0], [1.0, 0.0, 0.0], [0.8, 0.9, 0.0]])
    box = Region("box", lo=(-0.5, -0.5, -0.5), hi=(0.5, 0.5, 0.5))
    torch.testing.assert_close(box.signed_distance(pts), torch.tensor([0.5, 0.2, -0.5, -0.5]))
    half = Region("halfspace", axis=1, sign=-1, value=0.5)
    torch.testing.assert_close(half.signed_distance(pts), torch.tensor([0.5, 0.5, 0.5, -0.4]))
    assert (Region("all").signed_distance(pts) >= 1e5).all()


# ---------------------------------------------------------------- code fields


@pytest.mark.parametrize("text, blend", [
    ("h=dog@x>0,cat", 0.1),
    ("h=fox@box:-0.4,-0.4,-0.4,0.4,0.4,0.4,dog@y>0.2,cat", 0.2),
    ("h=dog@x>0.3,cat@x<-0.3", 0.1),  # a gap: no rest part
    ("h=dog@x>0,cat@y>0,fox", 0.3),  # overlapping regions
    ("h=dog@x>0,cat@x<0.1", 0.0),  # hard seams
])
def test_codes_stay_on_the_simplex(text: str, blend: float) -> None:
    u = code_field(parse_hybrid(text, NAMES, blend=blend), 3)(_random_points(4000, 0))
    assert u.shape == (4000, 3) and u.dtype == torch.float32
    _on_simplex(u)


def test_corners_deep_inside_each_region_and_rest_outside() -> None:
    spec = parse_hybrid("h=fox@box:-0.4,-0.4,-0.4,0.4,0.4,0.4,dog@y>0.6,cat", NAMES, blend=0.1)
    u = code_field(spec, 4)(torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.9, 0.5], [0.0, -0.9, 0.0], [0.9, 0.0, 0.0]]))
    torch.testing.assert_close(u, torch.eye(4)[[2, 0, 1, 1]])  # the 4th code is not in the spec: always 0


def test_half_blend_on_the_boundary() -> None:
    u = code_field(parse_hybrid("h=dog@x>0.2,cat", NAMES, blend=0.1), 2)(torch.tensor([[0.2, 0.0, 0.0], [0.26, 0, 0]]))
    torch.testing.assert_close(u, torch.tensor([[0.5, 0.5], [1.0, 0.0]]))


@pytest.mark.parametrize("text", ["h=dog@x>0,cat", "h=fox@box:-0.4,-0.4,-0.4,0.4,0.4,0.4,cat", "h=dog@x>0.3,cat@x<-0.3"])
def test_continuous_across_boundaries(text: str) -> None:
    # Smoothstep over a band of width b has slope <= 1.5 / b per unit distance; normalising can at
    # most double it. A seam (a jump of 1) would show as a difference near 1 for some pair.
    blend, eps = 0.1, 1e-3
    field = code_field(parse_hybrid(text, NAMES, blend=blend), 3)
    x = torch.linspace(-1, 1, 4001)
    for direction in ([1.0, 0.0, 0.0], [0.6, 0.8, 0.0]):
        pts = x[:, None] * torch.tensor(direction) + torch.tensor([0.0, 0.05, 0.1])
        step = eps * torch.tensor(direction)
        jump = (field(pts + step) - field(pts)).abs().max()
        assert jump < 3.0 * 1.5 / blend * eps


def test_hard_seam_when_blend_is_zero() -> None:
    field = code_field(parse_hybrid("h=dog@x>0,cat", NAMES, blend=0.0), 2)
    u = field(torch.tensor([[-1e-4, 0.0, 0.0], [1e-4, 0.0, 0.0]]))
    torch.testing.assert_close(u, torch.tensor([[0.0, 1.0], [1.0, 0.0]]))


def test_gap_goes_to_the_part_with_the_largest_signed_distance() -> None:
    field = code_field(parse_hybrid("h=dog@x>0.5,cat@x<-0.5", NAMES, blend=0.1), 2)
    u = field(torch.tensor([[0.3, 0.0, 0.0], [-0.2, 0.0, 0.0], [0.0, 0.0, 0.0], [0.9, 0, 0]]))
    torch.testing.assert_close(u, torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [1.0, 0.0]]))
    # Far from both boxes along y, the nearer box owns the point.
    boxes = parse_hybrid("h=dog@box:0.5,-0.2,-0.2,0.9,0.2,0.2,cat@box:-0.9,-0.2,-0.2,-0.6,0.2,0.2", NAMES, blend=0.1)
    torch.testing.assert_close(code_field(boxes, 2)(torch.tensor([[0.4, 0.9, 0.0]])), torch.tensor([[1.0, 0.0]]))


def test_field_follows_dtype_and_rejects_bad_input() -> None:
    field = code_field(parse_hybrid("h=dog@x>0,cat", NAMES), 3)
    assert field(torch.zeros(5, 3, dtype=torch.float64)).dtype == torch.float64
    with pytest.raises(ValueError, match=r"points \[N, 3\]"):
        field(torch.zeros(5, 2))
    with pytest.raises(HybridError, match="source 2 does not exist in a set of 2"):
        code_field(parse_hybrid("h=fox@x>0,cat", NAMES), 2)


# ---------------------------------------------------------------- anchors

ANCHORS = [
    {"point": [0.5, 0.0, 0.0], "source": "dog"},
    {"point": [0.5, 0.5, 0.0], "source": 0},
    {"point": [-0.5, 0.0, 0.0], "source": "cat"},
]


def test_anchors_from_yaml_and_json(tmp_path: Path) -> None:
    (tmp_path / "My Mix.json").write_text(json.dumps(ANCHORS))
    yaml_text = "".join(f"- point: {a['point']}\n  source: {a['source']}\n" for a in ANCHORS)
    (tmp_path / "mix.yaml").write_text(yaml_text)
    js = load_anchors(tmp_path / "My Mix.json", NAMES, blend=0.2)
    ym = load_anchors(tmp_path / "mix.yaml", NAMES, blend=0.2)
    assert js.name == "my_mix" and ym.name == "mix"
    assert js.anchors == ym.anchors == (((0.5, 0.0, 0.0), 0), ((0.5, 0.5, 0.0), 0), ((-0.5, 0.0, 0.0), 1))
    assert [p.source for p in js.parts] == [0, 1]
    assert json.loads(json.dumps(js.to_dict()))["anchors"][2] == {"point": [-0.5, 0.0, 0.0], "source": 1}


def test_anchor_field(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps(ANCHORS))
    field = code_field(load_anchors(tmp_path / "a.json", NAMES, blend=0.2), 3)
    u = field(torch.tensor([[0.5, 0.0, 0.0], [-0.5, 0.0, 0.0], [0.0, 0.0, 0.0], [40.0, 0.0, 0.0], [-40.0, 3, 0]]))
    assert u[0, 0] > 0.99 and u[1, 1] > 0.99 and u[:, 2].abs().max() == 0
    assert 0.5 < u[2, 0] < 0.75  # the midpoint leans to dog, which has two anchors near it
    torch.testing.assert_close(u[3:], torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))  # no underflow far away
    _on_simplex(field(_random_points(3000, 1, scale=3.0)))
    hard = code_field(load_anchors(tmp_path / "a.json", NAMES, blend=0.0), 3)
    torch.testing.assert_close(hard(torch.tensor([[0.1, 0.0, 0.0], [-0.1, 0.0, 0.0]])), torch.eye(3)[[0, 1]])


@pytest.mark.parametrize("name, content, message", [
    ("a.json", "[{", "not valid JSON"),
    ("a.yaml", "- point: [0, 0\n", "not valid YAML"),
    ("a.yaml", "point: [0, 0, 0]\n", "expected a non-empty list"),
    ("a.json", "[]", "expected a non-empty list"),
    ("a.json", '[{"point": [0, 0, 0]}]', "anchor 0 must be a mapping with exactly 'point' and 'source'"),
    ("a.json", '[{"point": [0, 0], "source": 0}]', "anchor 0 point must be a list of 3 numbers"),
    ("a.json", '[{"point": [0, "a", 0], "source": 0}]', "anchor 0 point must be a list of 3 numbers"),
    ("a.yaml", "- {point: [0, .nan, 0], source: 0}\n- {point: [1, 0, 0], source: 1}\n", "anchor 0 point .* is not finite"),
    ("a.json", '[{"point": [0, 0, 0], "source": true}]', "source must be an asset name or index"),
    ("a.json", '[{"point": [0, 0, 0], "source": "wolf"}]', "unknown source 'wolf'"),
    ("a.json", '[{"point": [0, 0, 0], "source": 0}, {"point": [1, 0, 0], "source": "dog"}]', "at least 2 distinct sources"),
    ("a.json", '[{"point": [0, 0, 0], "source": 0}, {"point": [0, 0, 0], "source": 1}]', "tagged with two sources"),
    ("dog.json", json.dumps(ANCHORS), "hybrid name 'dog' clashes with an asset"),
])
def test_rejected_anchor_files(tmp_path: Path, name: str, content: str, message: str) -> None:
    (tmp_path / name).write_text(content)
    with pytest.raises(HybridError, match=message) as info:
        load_anchors(tmp_path / name, NAMES)
    assert "\n" not in str(info.value)


def test_unreadable_anchor_files(tmp_path: Path) -> None:
    with pytest.raises(HybridError, match="anchor file not found"):
        load_anchors(tmp_path / "nope.yaml", NAMES)
    (tmp_path / "d.yaml").mkdir()
    with pytest.raises(HybridError, match="not a file"):
        load_anchors(tmp_path / "d.yaml", NAMES)
    (tmp_path / "b.yaml").write_bytes(b"- point: [0, 0, 0]\n  source: \xff\n")
    with pytest.raises(HybridError, match="not UTF-8"):
        load_anchors(tmp_path / "b.yaml", NAMES)
    with pytest.raises(HybridError, match="blend width must be"):
        load_anchors(tmp_path / "b.yaml", NAMES, blend=-1.0)
