"""Texture baking: rasterise the mesh in UV space, evaluate the colour field, fill the seams.

Each UV vertex is placed at clip position ``(2u - 1, 2v - 1, 0, 1)``, so one raster pass over
the atlas gives, for every covered texel, the triangle and barycentrics; interpolating the
world-frame vertex positions gives the surface point the texel shows, where the colour field is
evaluated. Texels outside every chart are filled (a few texels of true dilation, then pull-push
inpainting of the rest) so that bilinear filtering and mip-mapping never pull in black.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .errors import ExportError
from .frame import ArrayLike

if TYPE_CHECKING:  # the one definition of a colour field's signature
    from a3d_mesh.render.shading import ColorFn


def _to_tensor(x: ArrayLike, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().to(device=device, dtype=dtype)
    return torch.as_tensor(np.asarray(x), dtype=dtype, device=device)


def dilate(img: torch.Tensor, mask: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Grow the covered region by ``steps`` texels, each new texel the mean of covered 3x3 neighbours.

    Args:
        img: ``[H,W,C]`` float, values meaningful where ``mask``.
        mask: ``[H,W]`` bool coverage.
        steps: number of one-texel growth rounds.

    Returns: ``(img, mask)`` after growth; covered texels are never changed.
    """
    x = (img * mask[..., None]).permute(2, 0, 1)[None]  # [1,C,H,W]
    m = mask[None, None].to(img.dtype)
    kernel_c = torch.ones(x.shape[1], 1, 3, 3, dtype=img.dtype, device=img.device)
    kernel_m = torch.ones(1, 1, 3, 3, dtype=img.dtype, device=img.device)
    for _ in range(steps):
        s = F.conv2d(x, kernel_c, padding=1, groups=x.shape[1])
        n = F.conv2d(m, kernel_m, padding=1)
        grow = (n > 0) & (m == 0)
        if not bool(grow.any()):
            break
        x = torch.where(grow, s / n.clamp_min(1.0), x)
        m = torch.where(grow, torch.ones_like(m), m)
    return x[0].permute(1, 2, 0), m[0, 0] > 0


def pull_push(img: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Fill every uncovered texel from a coverage-weighted image pyramid (pull-push inpainting).

    Pull: halve resolution repeatedly, averaging premultiplied colour and coverage. Push: from
    the coarsest level back up, ``filled = s + (1 - w) * upsampled_coarser`` where ``s`` is the
    mean premultiplied colour and ``w`` the mean coverage, so covered texels (``w = 1``) keep
    their value exactly and holes get a smooth blend of the nearest charts.

    Args: ``img [H,W,C]`` float, ``mask [H,W]`` bool (at least one texel set).
    Returns: ``[H,W,C]`` with no hole.
    """
    s = (img * mask[..., None]).permute(2, 0, 1)[None]
    w = mask[None, None].to(img.dtype)
    levels = [(s, w)]
    while min(levels[-1][0].shape[-2:]) > 1:
        s, w = levels[-1]
        levels.append((F.avg_pool2d(s, 2, ceil_mode=True), F.avg_pool2d(w, 2, ceil_mode=True)))
    s, w = levels[-1]
    filled = s / w.clamp_min(1e-12)
    for s, w in reversed(levels[:-1]):
        up = F.interpolate(filled, size=s.shape[-2:], mode="bilinear", align_corners=False)
        filled = s + (1.0 - w) * up
    return filled[0].permute(1, 2, 0)


@torch.no_grad()
def bake_texture(
    verts: ArrayLike,
    faces: ArrayLike,
    uv: ArrayLike,
    color_fn: ColorFn,
    texture_size: int = 1024,
    dilate_px: int = 8,
    chunk: int = 1 << 18,
    backend: str = "auto",
    device: torch.device | str | None = None,
) -> np.ndarray:
    """Bake ``color_fn`` over a UV-unwrapped mesh into a seam-filled texture.

    Args:
        verts: ``[V,3]`` float world-frame positions of the (seam-split) UV vertices, in the
            frame ``color_fn`` expects (the set's world frame, before any export transform).
        faces: ``[F,3]`` int into ``verts`` and ``uv``.
        uv: ``[V,2]`` float in [0, 1], v up (v = 0 is the bottom image row).
        color_fn: maps world points ``[N,3]`` float32 to rgb ``[N,3]`` in [0, 1]; called in
            chunks of at most ``chunk`` points, under ``torch.no_grad``.
        texture_size: texture is ``texture_size x texture_size``.
        dilate_px: texels of true dilation before pull-push fills the rest.
        backend: ``"auto" | "cpu" | "cuda"``, passed to ``a3d_mesh.render.ops``.
        device: where to rasterise and call ``color_fn``; default: ``verts``' device if it is a
            tensor, else CPU.

    Returns:
        ``[S,S,3]`` float32 numpy in [0, 1], *top row first* (ready to save as an image).

    Raises:
        ExportError: the atlas covers no texel centre at this resolution.
    """
    from a3d_mesh.render.ops import interpolate, rasterize  # render may be on CUDA; import late

    if device is None:
        device = verts.device if isinstance(verts, torch.Tensor) else torch.device("cpu")
    device = torch.device(device)
    pos = _to_tensor(verts, torch.float32, device)
    tri = _to_tensor(faces, torch.int64, device)
    tc = _to_tensor(uv, torch.float32, device)
    clip = torch.cat([tc * 2.0 - 1.0, torch.zeros_like(tc[:, :1]), torch.ones_like(tc[:, :1])], dim=1)
    rast, _ = rasterize(clip[None], tri, (texture_size, texture_size), grad_db=False, backend=backend)
    points, _ = interpolate(pos[None], rast, tri, backend=backend)
    mask = rast[0, ..., 3] > 0  # [S,S], row 0 = v near 0 (bottom of the image)
    if not bool(mask.any()):
        raise ExportError(f"UV atlas covers no texel at texture size {texture_size}")
    pts = points[0][mask]
    rgb = torch.cat([color_fn(pts[i : i + chunk]).float().reshape(-1, 3) for i in range(0, pts.shape[0], chunk)])
    img = torch.zeros(texture_size, texture_size, 3, dtype=torch.float32, device=device)
    img[mask] = rgb.clamp(0.0, 1.0).to(device)
    img, grown = dilate(img, mask, dilate_px)
    img = pull_push(img, grown)
    return img.flip(0).clamp(0.0, 1.0).cpu().numpy()


def texture_png_bytes(texture: np.ndarray) -> bytes:
    """Encode ``[H,W,3]`` float in [0, 1] (or uint8), top row first, as 8-bit RGB PNG bytes."""
    tex = texture if texture.dtype == np.uint8 else np.round(np.clip(texture, 0.0, 1.0) * 255.0).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(tex[..., :3]), mode="RGB").save(buf, format="PNG")
    return buf.getvalue()
