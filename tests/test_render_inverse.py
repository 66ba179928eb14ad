"""Inverse rendering through the CPU path: vertices move to match a target silhouette and colours.

Only the antialiasing op supplies gradients that move silhouettes (rasterisation itself is
piecewise constant in coverage), so convergence of the silhouette proves those gradients point
the right way; per-vertex colours make the interior term (barycentric gradients) matter too.
"""

from __future__ import annotations

import torch

from a3d_mesh import render


def _grid_mesh(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Planar ``n x n`` vertex grid over ``[-0.5, 0.5]^2``: ``xy [n*n, 2]``, faces ``[2(n-1)^2, 3]``."""
    t = torch.linspace(-0.5, 0.5, n)
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    xy = torch.stack([xx, yy], -1).reshape(-1, 2)
    i = torch.arange(n - 1)
    a = (i[:, None] * n + i[None, :]).reshape(-1)
    faces = torch.cat([torch.stack([a, a + 1, a + n + 1], 1), torch.stack([a, a + n + 1, a + n], 1)])
    return xy, faces


def _render(xy: torch.Tensor, col: torch.Tensor, tri: torch.Tensor, res: int) -> torch.Tensor:
    """Image ``[1, res, res, 3]`` of a flat mesh with vertex ``xy [V, 2]`` (clip) and colours."""
    pos = torch.cat([xy, torch.zeros_like(xy[:, :1]), torch.ones_like(xy[:, :1])], 1)[None]
    rast, _ = render.rasterize(pos, tri, (res, res), backend="cpu")
    img, _ = render.interpolate(col, rast, tri, backend="cpu")
    return render.antialias(img, rast, pos, tri, backend="cpu")


def test_vertices_move_to_match_target_silhouette_and_colour() -> None:
    torch.manual_seed(0)
    xy, tri = _grid_mesh(4)
    col = torch.rand(xy.shape[0], 3) * 0.7 + 0.3
    target_xy = xy * 1.1 + torch.tensor([0.12, -0.08])
    target_xy = target_xy + 0.03 * torch.randn_like(xy)
    target = _render(target_xy, col, tri, 64)
    start = xy * 0.8
    param = start.clone().requires_grad_(True)
    opt = torch.optim.Adam([param], lr=0.01)
    losses = []
    for _ in range(150):
        opt.zero_grad()
        loss = ((_render(param, col, tri, 64) - target) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    err0 = (start - target_xy).norm(dim=1).mean().item()
    err1 = (param.detach() - target_xy).norm(dim=1).mean().item()
    assert losses[-1] < 0.05 * losses[0], (losses[0], losses[-1])
    assert err1 < 0.25 * err0, (err0, err1)
