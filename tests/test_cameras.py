"""Camera conventions: projection of known points, rays through pixel centres, sampling."""

import pytest
import torch

from a3d_mesh.cameras import CameraConfig, make_cameras, orbit_cameras, pixel_rays, sample_cameras
from a3d_mesh.simplex import CodeSamplingConfig, edge, sample_code, sweep


def test_origin_projects_to_image_centre_and_up_is_up() -> None:
    cams = make_cameras(torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([3.0]), torch.tensor([60.0]))
    clip = cams.mvp[0] @ torch.tensor([0.0, 0.0, 0.0, 1.0])
    assert torch.allclose(clip[:2] / clip[3], torch.zeros(2), atol=1e-6)
    up = cams.mvp[0] @ torch.tensor([0.0, 0.5, 0.0, 1.0])
    assert up[1] / up[3] > 0  # +Y world is up on screen
    right = cams.mvp[0] @ torch.tensor([0.5, 0.0, 0.0, 1.0])
    assert right[0] / right[3] > 0  # azimuth 0 looks from +Z: +X is to the right
    assert torch.allclose(cams.position[0], torch.tensor([0.0, 0.0, 3.0]), atol=1e-6)


def test_rays_pass_through_the_projected_pixel() -> None:
    cams = make_cameras(torch.tensor([20.0]), torch.tensor([40.0]), torch.tensor([3.0]), torch.tensor([45.0]))
    h = w = 16
    o, d = pixel_rays(cams, h, w)
    r, c = 3, 11
    p = o[0, r, c] + 2.5 * d[0, r, c]
    clip = cams.mvp[0] @ torch.cat([p, torch.ones(1)])
    ndc = clip[:2] / clip[3]
    assert torch.allclose(ndc, torch.tensor([(c + 0.5) / w * 2 - 1, 1 - (r + 0.5) / h * 2]), atol=1e-5)


def test_sampling_is_reproducible_and_in_range() -> None:
    cfg = CameraConfig(views_per_step=4)
    a = sample_cameras(cfg, torch.Generator().manual_seed(3))
    b = sample_cameras(cfg, torch.Generator().manual_seed(3))
    assert torch.equal(a.mvp, b.mvp)
    assert ((a.elevation >= 0) & (a.elevation <= 30)).all()
    gaps = torch.diff(torch.sort(a.azimuth % 360).values)
    assert torch.allclose(gaps, torch.full_like(gaps, 90.0), atol=1e-3)  # spread evenly around
    assert len(orbit_cameras(cfg, 6)) == 6


@pytest.mark.parametrize("view_group", [0, 4])
def test_relative_distance_keeps_the_apparent_size_at_every_fov(view_group: int) -> None:
    """With ``relative_distance`` a point 1 unit above the origin, seen level, projects to NDC
    height 1 / r whatever the fov (r drawn from ``distance_range``); with absolute distances its
    height changes with the fov."""
    def heights(relative: bool) -> torch.Tensor:
        cfg = CameraConfig(elevation_range=(0.0, 0.0), fov_range=(20.0, 70.0), distance_range=(1.25, 1.25),
                           relative_distance=relative, views_per_step=8, view_group=view_group)
        cams = sample_cameras(cfg, torch.Generator().manual_seed(1))
        clip = cams.mvp @ torch.tensor([0.0, 1.0, 0.0, 1.0])
        return clip[:, 1] / clip[:, 3]

    assert torch.allclose(heights(True), torch.full((8,), 1 / 1.25), atol=1e-5)
    absolute = heights(False)
    assert float(absolute.max() - absolute.min()) > 0.1


def test_code_sampling_frequencies() -> None:
    g = torch.Generator().manual_seed(0)
    cfg = CodeSamplingConfig()
    draws = [sample_code(3, cfg, g) for _ in range(4000)]
    corners = sum(d.a in (0.0, 1.0) for d in draws) / len(draws)
    assert abs(corners - 0.5) < 0.04
    for d in draws[:50]:
        assert d.i != d.j and abs(float(d.u.sum()) - 1) < 1e-6 and (d.u >= 0).all()
    assert sample_code(1, cfg, g).u.tolist() == [1.0]


def test_edges_and_sweeps() -> None:
    assert edge(0, 2, 0.25, 3).tolist() == [0.25, 0.0, 0.75]
    s = sweep(0, 1, 2, 5)
    assert s[0].tolist() == [1.0, 0.0] and s[-1].tolist() == [0.0, 1.0]
