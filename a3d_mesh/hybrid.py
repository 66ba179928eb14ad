"""Hybrid specifications and the spatially varying simplex codes u(x) they define.

A hybrid is the trained set evaluated at a code that varies over space (method note, section 4):
the user says which object owns which region of the shared world frame, and the field blends the
corners ``e_k`` across a transition of width ``blend`` (world units) so seams do not tear.

Two ways to say it:

- ``parse_hybrid("NAME=SOURCE[@REGION][,SOURCE[@REGION]...]", names)`` (``parse_all`` for every
  ``--hybrid`` and ``--hybrid-anchors`` of a command at once): SOURCE is an asset name
  or a 0-based index; REGION is ``x>v`` / ``x<v`` (also ``>=`` / ``<=``, same meaning; likewise
  y, z) or ``box:x0,y0,z0,x1,y1,z1``; a SOURCE without a region takes the rest of space.
- ``load_anchors(path, names)``: a YAML/JSON list of ``{point: [x, y, z], source: NAME_OR_INDEX}``
  blended by radial basis functions.

:func:`code_field` turns either into ``u: [N, 3] world -> [N, K]`` with every row on the simplex.
Every user mistake is a :class:`HybridError` whose message is one line naming the offending text.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from a3d_mesh.errors import A3DMeshError
from a3d_mesh.prompts import RESERVED_NAMES, slugify

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
# Plain decimal numbers only: float() would also take 'nan', 'inf' and '1_0', none of which is a coordinate.
_NUM = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
_NUM_RE = re.compile(rf"^{_NUM}$")
_HALF_RE = re.compile(rf"^([xyz])\s*(>=|<=|>|<)\s*({_NUM})$")
_AXES = "xyz"
# Signed distance of the "all" region: larger than any distance inside a sane scene, finite so
# that arithmetic on it (differences, smoothstep) never produces NaN.
ALL_DISTANCE = 1.0e6
REGION_FORMS = "x>v, x<v, y>v, y<v, z>v, z<v or box:x0,y0,z0,x1,y1,z1"


class HybridError(A3DMeshError, ValueError):
    """A hybrid spec or anchor file that cannot be used; the message is one line for the user."""


@dataclass(frozen=True)
class Region:
    """A region of the world frame owned by one source.

    ``kind``: ``"halfspace"`` (``sign * (x[axis] - value) > 0``; sign +1 for ``>``, -1 for ``<``),
    ``"box"`` (``lo < x < hi`` on every axis) or ``"all"`` (the rest of space).
    ``axis`` is 0, 1, 2 for x, y, z (-1 when unused); ``lo``/``hi`` are the box corners.
    """

    kind: str
    axis: int = -1
    sign: int = 0
    value: float = 0.0
    lo: tuple[float, float, float] | None = None
    hi: tuple[float, float, float] | None = None

    def signed_distance(self, points: torch.Tensor) -> torch.Tensor:
        """Euclidean distance to the region's boundary, positive inside, in world units.

        points: [N, 3] float, world frame. Returns [N], same dtype and device. For ``"all"`` it is
        the constant :data:`ALL_DISTANCE`.
        """
        if self.kind == "halfspace":
            return self.sign * (points[:, self.axis] - self.value)
        if self.kind == "box":
            lo = points.new_tensor(self.lo)
            hi = points.new_tensor(self.hi)
            q = torch.maximum(lo - points, points - hi)  # [N, 3], > 0 outside on that axis
            outside = q.clamp(min=0.0).norm(dim=-1)
            inside = q.amax(dim=-1).clamp(max=0.0)
            return -(outside + inside)
        return points.new_full(points.shape[:1], ALL_DISTANCE)

    def describe(self) -> str:
        """The region in spec syntax (``x>0.5``, ``box:...``, or ``rest``)."""
        if self.kind == "halfspace":
            return f"{_AXES[self.axis]}{'>' if self.sign > 0 else '<'}{self.value:g}"
        if self.kind == "box":
            assert self.lo is not None and self.hi is not None
            return "box:" + ",".join(f"{v:g}" for v in (*self.lo, *self.hi))
        return "rest"


ALL = Region("all")


@dataclass(frozen=True)
class HybridPart:
    """One source of a hybrid: object ``source`` (index into the set, name ``name``) owns ``region``."""

    source: int
    name: str
    region: Region


@dataclass(frozen=True)
class HybridSpec:
    """A named hybrid. Region parts, or (when ``anchors`` is set) anchor points tagged by source.

    ``blend``: transition width in world units. ``text``: the spec string as given (or the anchor
    file path). ``anchors``: ``((x, y, z), k)`` pairs; for anchor hybrids ``parts`` lists each
    distinct source once, with region ``"all"``.
    """

    name: str
    parts: tuple[HybridPart, ...]
    blend: float
    text: str
    anchors: tuple[tuple[tuple[float, float, float], int], ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description for the manifest."""
        out: dict[str, Any] = {
            "name": self.name,
            "spec": self.text,
            "blend": self.blend,
            "parts": [{"source": p.source, "name": p.name, "region": p.region.describe()} for p in self.parts],
        }
        if self.anchors is not None:
            out["anchors"] = [{"point": list(pt), "source": k} for pt, k in self.anchors]
        return out


# ---------------------------------------------------------------- parsing


def _check_common(name: str, names: Sequence[str], blend: float, bound: float, where: str) -> None:
    """Checks shared by specs and anchor files: hybrid name, blend width and scene bound.

    where: the message prefix naming the offending input (``hybrid 'SPEC'`` or ``anchor file PATH``).
    """
    if not name:
        raise HybridError(f"{where}: empty hybrid name (expected NAME=SOURCE[@REGION],...)")
    if not _NAME_RE.match(name):
        raise HybridError(f"{where}: bad hybrid name '{name}' (use a-z, 0-9, '_' and '-', starting with a letter or digit)")
    if name in names:
        raise HybridError(f"{where}: hybrid name '{name}' clashes with an asset of the set")
    if name in RESERVED_NAMES:
        raise HybridError(f"{where}: hybrid name '{name}' is reserved (previews/{name}.png is the set overview)")
    if not math.isfinite(blend) or blend < 0:
        raise HybridError(f"{where}: blend width must be a finite number >= 0, got {blend}")
    if not math.isfinite(bound) or bound <= 0:
        raise HybridError(f"{where}: scene bound must be a finite number > 0, got {bound}")


def _resolve_source(token: str, names: Sequence[str], where: str) -> int:
    """Asset name or 0-based index -> index; names win over indices (a set may name an asset '1')."""
    if token in names:
        return list(names).index(token)
    if token.isdigit() and int(token) < len(names):
        return int(token)
    known = ", ".join(f"{i}:{n}" for i, n in enumerate(names))
    raise HybridError(f"{where}: unknown source '{token}' (known: {known})")


def _parse_region(body: str, spec: str, bound: float) -> Region:
    """Region text (the part after '@') -> :class:`Region`, rejecting empty or whole-cube regions."""
    cube = f"the scene cube [-{bound:g}, {bound:g}]^3"
    empty = f"hybrid '{spec}': empty region '{body}' (entirely outside {cube})"
    whole = f"hybrid '{spec}': region '{body}' covers the whole of {cube}, leaving nothing to the other parts"
    if body.startswith("box:"):
        nums = [t.strip() for t in body[4:].split(",")]
        if len(nums) != 6 or not all(_NUM_RE.match(t) for t in nums):
            raise HybridError(f"hybrid '{spec}': malformed region '{body}' (box needs six numbers: box:x0,y0,z0,x1,y1,z1)")
        v = [float(t) for t in nums]
        lo, hi = (v[0], v[1], v[2]), (v[3], v[4], v[5])
        for a in range(3):
            if lo[a] >= hi[a]:
                raise HybridError(f"hybrid '{spec}': box '{body}' has min >= max on {_AXES[a]} ({lo[a]:g} >= {hi[a]:g})")
        if any(hi[a] <= -bound or lo[a] >= bound for a in range(3)):
            raise HybridError(empty)
        if all(lo[a] <= -bound and hi[a] >= bound for a in range(3)):
            raise HybridError(whole)
        return Region("box", lo=lo, hi=hi)
    m = _HALF_RE.match(body)
    if not m:
        raise HybridError(f"hybrid '{spec}': malformed region '{body}' (expected {REGION_FORMS})")
    axis, sign, value = _AXES.index(m.group(1)), (1 if m.group(2).startswith(">") else -1), float(m.group(3))
    # Within the cube the half-space spans sign*(x - value) > 0 for x in [-bound, bound].
    far, near = (bound, -bound) if sign > 0 else (-bound, bound)
    if sign * (far - value) <= 0:
        raise HybridError(empty)
    if sign * (near - value) >= 0:
        raise HybridError(whole)
    return Region("halfspace", axis=axis, sign=sign, value=value)


def _split_parts(body: str, spec: str) -> list[str]:
    """Split 'a@x>0,b@box:0,0,0,1,1,1,c' at the commas that separate parts, not box coordinates."""
    tokens = [t.strip() for t in body.split(",")]
    parts: list[str] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        i += 1
        if "@" in tok and tok.split("@", 1)[1].strip().startswith("box:"):
            # A box owns the following numeric tokens (up to five); a name ends it early, which
            # leaves too few numbers and is reported as a malformed box.
            while i < len(tokens) and tok.count(",") < 5 and _NUM_RE.match(tokens[i]):
                tok += "," + tokens[i]
                i += 1
        if not tok:
            raise HybridError(f"hybrid '{spec}': empty part (two commas in a row or a trailing comma)")
        parts.append(tok)
    return parts


def parse_hybrid(text: str, names: Sequence[str], blend: float = 0.1, bound: float = 1.0) -> HybridSpec:
    """Parse ``NAME=SOURCE[@REGION][,SOURCE[@REGION]...]`` against the set's asset ``names``.

    blend: transition width (world units, >= 0). bound: half-size of the scene cube, used to reject
    regions that are empty (or cover everything) inside ``[-bound, bound]^3``.
    Raises :class:`HybridError` (one line, naming the problem and the offending text).
    """
    spec = text.strip()
    if "=" not in spec:
        raise HybridError(f"hybrid '{spec}': missing '=' (expected NAME=SOURCE[@REGION][,SOURCE[@REGION]...])")
    name, body = (s.strip() for s in spec.split("=", 1))
    _check_common(name, names, blend, bound, f"hybrid '{spec}'")
    parts: list[HybridPart] = []
    for tok in _split_parts(body, spec):
        src_text, _, region_text = (s.strip() for s in tok.partition("@"))
        if not src_text:
            raise HybridError(f"hybrid '{spec}': part '{tok}' has no source")
        if "@" in tok and not region_text:
            raise HybridError(f"hybrid '{spec}': malformed region '' after '{src_text}@' (expected {REGION_FORMS})")
        k = _resolve_source(src_text, names, f"hybrid '{spec}'")
        if any(p.source == k for p in parts):
            raise HybridError(f"hybrid '{spec}': source '{src_text}' (asset {k}) is used twice")
        region = _parse_region(region_text, spec, bound) if region_text else ALL
        other = next((p.name for p in parts if p.region.kind == "all"), None)
        if region.kind == "all" and other is not None:
            raise HybridError(f"hybrid '{spec}': two parts without a region ('{other}' and '{src_text}'); only one may take the rest of space")
        parts.append(HybridPart(k, names[k], region))
    if len(parts) < 2:
        raise HybridError(f"hybrid '{spec}': needs at least 2 parts (SOURCE[@REGION],SOURCE[@REGION]...), got {len(parts)}")
    return HybridSpec(name=name, parts=tuple(parts), blend=float(blend), text=spec)


def parse_all(texts: Sequence[str], anchor_files: Sequence[str | Path], names: Sequence[str], blend: float = 0.1,
              bound: float = 1.0) -> tuple[HybridSpec, ...]:
    """Every ``--hybrid`` spec, then every ``--hybrid-anchors`` file (named after its stem), as one
    tuple; the one place that rejects two hybrids of the same name, whatever they come from."""
    specs = tuple(parse_hybrid(t, names, blend, bound) for t in texts)
    specs += tuple(load_anchors(a, names, blend, bound) for a in anchor_files)
    seen: set[str] = set()
    for s in specs:
        if s.name in seen:
            raise HybridError(f"hybrid '{s.text}': hybrid name '{s.name}' is used twice")
        seen.add(s.name)
    return specs


def _read_anchor_file(path: Path) -> Any:
    """Load the file as JSON (``.json``) or YAML (anything else); every failure is a HybridError."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise HybridError(f"anchor file not found: {path}") from None
    except IsADirectoryError:
        raise HybridError(f"anchor file is not a file: {path}") from None
    except OSError as e:
        raise HybridError(f"cannot read anchor file {path}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise HybridError(f"anchor file {path} is not UTF-8 text (byte {e.start}: {e.reason})") from None
    try:
        if path.suffix.lower() == ".json":
            return json.loads(text)
        import yaml  # lazy: only anchor files need it

        return yaml.safe_load(text)
    except Exception as e:  # noqa: BLE001 - json and yaml raise several unrelated types
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise HybridError(f"anchor file {path} is not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'}: {first}") from None


def _parse_anchor(item: Any, i: int, names: Sequence[str], where: str) -> tuple[tuple[float, float, float], int]:
    """One ``{point: [x, y, z], source: NAME_OR_INDEX}`` entry -> ((x, y, z), k)."""
    if not isinstance(item, dict) or set(item) != {"point", "source"}:
        raise HybridError(f"{where}: anchor {i} must be a mapping with exactly 'point' and 'source', got {item!r}")
    pt, src = item["point"], item["source"]
    if not isinstance(pt, list) or len(pt) != 3 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in pt):
        raise HybridError(f"{where}: anchor {i} point must be a list of 3 numbers [x, y, z], got {pt!r}")
    if not all(math.isfinite(float(v)) for v in pt):
        raise HybridError(f"{where}: anchor {i} point {pt!r} is not finite")
    if isinstance(src, bool) or not isinstance(src, (str, int)):
        raise HybridError(f"{where}: anchor {i} source must be an asset name or index, got {src!r}")
    k = _resolve_source(str(src), names, where)
    return (float(pt[0]), float(pt[1]), float(pt[2])), k


def load_anchors(path: str | Path, names: Sequence[str], blend: float = 0.1, bound: float = 1.0) -> HybridSpec:
    """Read an anchor file (YAML or JSON list of ``{point: [x, y, z], source: NAME_OR_INDEX}``).

    Points are in the world frame. The hybrid is named after the file stem (slugified). Raises
    :class:`HybridError` for an unreadable file, a bad structure, an unknown source, a non-finite
    point, fewer than 2 distinct sources, or one point claimed by two sources.
    """
    p = Path(path)
    name = slugify(p.stem)
    where = f"anchor file {p}"
    _check_common(name, names, blend, bound, where)
    data = _read_anchor_file(p)
    if not isinstance(data, list) or not data:
        raise HybridError(f"{where}: expected a non-empty list of {{point: [x, y, z], source: NAME_OR_INDEX}}, got {type(data).__name__}")
    anchors = tuple(_parse_anchor(item, i, names, where) for i, item in enumerate(data))
    owner: dict[tuple[float, float, float], int] = {}
    for pt, k in anchors:
        if owner.setdefault(pt, k) != k:
            raise HybridError(f"{where}: point {list(pt)} is tagged with two sources ({owner[pt]} and {k})")
    sources = list(dict.fromkeys(k for _, k in anchors))
    if len(sources) < 2:
        raise HybridError(f"{where}: needs anchors of at least 2 distinct sources, got {len(sources)}")
    parts = tuple(HybridPart(k, names[k], ALL) for k in sources)
    return HybridSpec(name=name, parts=parts, blend=float(blend), text=str(p), anchors=anchors)


# ---------------------------------------------------------------- code fields


def smoothstep01(t: torch.Tensor) -> torch.Tensor:
    """3t^2 - 2t^3 of t clamped to [0, 1]: C1, 0 below 0, 1 above 1."""
    t = t.clamp(0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def membership(d: torch.Tensor, blend: float) -> torch.Tensor:
    """Soft inside-ness of a signed distance ``d`` ([...], > 0 inside): smoothstep over a band of
    width ``blend`` centred on the boundary; a hard step (0.5 on the boundary) when blend is 0."""
    if blend > 0:
        return smoothstep01(d / blend + 0.5)
    return (torch.sign(d) + 1.0) * 0.5


def region_weights(spec: HybridSpec, points: torch.Tensor) -> torch.Tensor:
    """Per-part weights of a region hybrid, [N, P] for points [N, 3] (world), rows summing to 1.

    Region parts weigh their membership m_r; the rest part weighs prod(1 - m_r). Where those sum
    to less than 1 (a gap no part claims) the shortfall goes to the part(s) with the largest signed
    distance, blended over ``blend`` near ties, so the field stays continuous for blend > 0.
    """
    d = torch.stack([p.region.signed_distance(points) for p in spec.parts], dim=-1)  # [N, P]
    is_rest = torch.tensor([p.region.kind == "all" for p in spec.parts], device=points.device)
    m = membership(d, spec.blend)
    rest = torch.prod(torch.where(is_rest, torch.ones_like(m), 1.0 - m), dim=-1, keepdim=True)
    w = torch.where(is_rest, rest.expand_as(m), m)
    # With a rest part sum(w) >= 1 always (prod(1 - m) >= 1 - sum m), so the fallback only acts in gaps.
    shortfall = (1.0 - w.sum(dim=-1, keepdim=True)).clamp(min=0.0)
    d_max = d.amax(dim=-1, keepdim=True)
    nearest = membership(d - d_max + 0.5 * spec.blend, spec.blend) if spec.blend > 0 else (d == d_max).to(d.dtype)
    w = w + shortfall * nearest
    return w / w.sum(dim=-1, keepdim=True)  # sum >= 1 by construction: no division by ~0


def anchor_weights(spec: HybridSpec, points: torch.Tensor) -> torch.Tensor:
    """Per-part weights of an anchor hybrid, [N, P] for points [N, 3] (world), rows summing to 1.

    Each part's weight is the sum of Gaussian RBFs exp(-|x - p|^2 / (2 sigma^2)), sigma = blend,
    over its anchors, normalised over parts. Computed as a softmax of per-part log-sum-exps, which
    is the same quantity without underflow, so far from every anchor the nearest anchors decide.
    blend = 0 is the sigma -> 0 limit: each point takes the source of its nearest anchor.
    """
    assert spec.anchors is not None
    pts = points.new_tensor([pt for pt, _ in spec.anchors])  # [M, 3]
    part_of = torch.tensor([[p.source for p in spec.parts].index(k) for _, k in spec.anchors], device=points.device)
    d2 = torch.cdist(points, pts).square()  # [N, M]
    n_parts = len(spec.parts)
    if spec.blend <= 0:
        onehot = torch.nn.functional.one_hot(part_of[d2.argmin(dim=-1)], n_parts)
        return onehot.to(points.dtype)
    logit = -d2 / (2.0 * spec.blend**2)
    per_part = torch.stack([torch.logsumexp(logit[:, part_of == j], dim=-1) for j in range(n_parts)], dim=-1)
    return torch.softmax(per_part, dim=-1)


def code_field(spec: HybridSpec, n_codes: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """The hybrid's code field ``u(x)``: points [N, 3] float (world frame) -> codes [N, n_codes].

    Every row is on the simplex (>= 0, sums to 1); sources not in the spec get 0. Deep inside a
    region the code is that source's corner e_k; continuous in x when blend > 0. Output follows the
    points' device and floating dtype. Raises :class:`HybridError` if a source index >= n_codes.
    """
    sources = [p.source for p in spec.parts]
    if max(sources) >= n_codes:
        raise HybridError(f"hybrid '{spec.name}': source {max(sources)} does not exist in a set of {n_codes} assets")

    def u(points: torch.Tensor) -> torch.Tensor:
        if points.ndim != 2 or points.shape[-1] != 3:
            raise ValueError(f"code field expects points [N, 3], got {tuple(points.shape)}")
        x = points if points.is_floating_point() else points.float()
        w = anchor_weights(spec, x) if spec.anchors is not None else region_weights(spec, x)
        out = x.new_zeros(x.shape[0], n_codes)
        out[:, sources] = w
        return out

    return u
