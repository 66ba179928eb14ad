"""Pictures people look at: per-object turnaround sheets, transition sweeps (GIF), the set page.

Images are float tensors [H,W,3] in [0,1], top row first; files are written atomically.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Callable, Sequence

import imageio.v3 as iio
import numpy as np
import torch
from PIL import Image, ImageDraw

from a3d_mesh.cameras import Cameras
from a3d_mesh.atomic import atomic_write_bytes

MeshFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]  # code u [K] -> (verts, faces)


def to_uint8(img: torch.Tensor) -> np.ndarray:
    return (img.detach().clamp(0, 1).cpu().numpy() * 255 + 0.5).astype(np.uint8)


def save_png(path: Path, img: torch.Tensor | np.ndarray) -> Path:
    arr = img if isinstance(img, np.ndarray) else to_uint8(img)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return atomic_write_bytes(path, buf.getvalue())


def save_gif(path: Path, frames: Sequence[torch.Tensor], fps: float = 8.0) -> Path:
    """An endlessly looping GIF that plays the sweep forwards then backwards."""
    arrs = [to_uint8(f) for f in frames]
    arrs = arrs + arrs[-2:0:-1]
    data = iio.imwrite("<bytes>", np.stack(arrs), extension=".gif", duration=int(1000 / fps), loop=0)
    return atomic_write_bytes(path, data)


def headlight(cams: Cameras) -> torch.Tensor:
    """Light from above-right of each camera [B,3]: readable shading for previews."""
    pos = torch.nn.functional.normalize(cams.position, dim=-1)
    up = torch.tensor([0.0, 1.0, 0.0]).expand_as(pos)
    right = torch.nn.functional.normalize(torch.cross(pos, up, dim=-1), dim=-1)
    return torch.nn.functional.normalize(pos + 0.5 * up - 0.3 * right, dim=-1)


def row(images: torch.Tensor) -> torch.Tensor:
    """[B,H,W,3] -> one strip [H, B*W, 3]."""
    return torch.cat(list(images), dim=1)


def labelled_grid(rows: Sequence[torch.Tensor], labels: Sequence[str]) -> np.ndarray:
    """Stack strips [H,W,3] vertically with a text label above each (the side-by-side set page)."""
    strips = [to_uint8(r) for r in rows]
    w = max(s.shape[1] for s in strips)
    pad = 18
    out = Image.new("RGB", (w, sum(s.shape[0] + pad for s in strips)), (255, 255, 255))
    draw = ImageDraw.Draw(out)
    y = 0
    for s, lab in zip(strips, labels):
        draw.text((4, y + 3), lab, fill=(0, 0, 0))
        out.paste(Image.fromarray(s), (0, y + pad))
        y += s.shape[0] + pad
    return np.asarray(out)
