"""Our cameras -> MVDream's camera conditioning (16 values per view).

Our world (``a3d_mesh.cameras``, docs/conventions.md): right-handed, +Y up, an object's front
faces +Z; a camera at (elevation e, azimuth a) sits at ``(cos e sin a, sin e, cos e cos a)`` times
its distance and looks at the origin with OpenGL axes (looks down its -Z, +Y up, +X right).

MVDream's (its ``camera_utils.get_camera`` with ``blender_coord=True``, the cameras it was trained
and sampled with): the same look-at construction in that same y-up frame, then the world is turned
to Blender's z-up frame by ``flip_yz``: ``(x, y, z) -> (x, -z, y)``, applied on the left of the
camera-to-world matrix (the camera's own axes stay OpenGL's). Finally the translation is divided
by its length (``normalize_camera``: distance does not condition MVDream) and the 4x4 matrix is
flattened row-major. So MVDream's azimuth-0 camera sits at -Y (Blender's front view), its
azimuth-90 camera at +X, and its up axis is +Z.

Since our orbit and MVDream's are built the same way, our camera at (e, a) maps to MVDream's
camera at (e, a): our front camera (azimuth 0, on +Z) is MVDream's azimuth-0 (front) camera, and
the object's front (+Z here) is what MVDream calls the front. Field of view and distance do not
enter (MVDream's rotation-only conditioning).
"""

from __future__ import annotations

import torch

from a3d_mesh.cameras import Cameras, look_at, orbit_position

# World change y-up (ours, MVDream's OpenGL step) -> z-up (Blender, MVDream's conditioning frame).
FLIP_YZ = torch.tensor([[1.0, 0.0, 0.0, 0.0],
                        [0.0, 0.0, -1.0, 0.0],
                        [0.0, 1.0, 0.0, 0.0],
                        [0.0, 0.0, 0.0, 1.0]])


def mvdream_camera_from_view(view: torch.Tensor) -> torch.Tensor:
    """MVDream conditioning ``[B, 16]`` float32 from our world->camera matrices ``view`` ``[B, 4, 4]``.

    ``c2w = view^-1`` (OpenGL camera axes, our y-up world), ``FLIP_YZ @ c2w`` moves it into
    MVDream's z-up frame, the translation is scaled to unit length, the matrix flattened row-major.
    """
    c2w = torch.linalg.inv(view.float())
    cam = FLIP_YZ.to(c2w) @ c2w
    position = cam[:, :3, 3]
    cam[:, :3, 3] = position / (position.norm(dim=-1, keepdim=True) + 1e-8)
    return cam.reshape(-1, 16)


def mvdream_camera_from_angles(elevation: torch.Tensor, azimuth: torch.Tensor) -> torch.Tensor:
    """MVDream conditioning ``[B, 16]`` for look-at-origin cameras at ``elevation``/``azimuth``
    ``[B]`` (degrees, our frame; distance does not matter). Same as :func:`mvdream_camera_from_view`
    of such cameras, without a matrix inverse."""
    elevation, azimuth = elevation.float().cpu(), azimuth.float().cpu()
    eye = orbit_position(elevation, azimuth, torch.ones_like(elevation))
    return mvdream_camera_from_view(look_at(eye))


def mvdream_cameras(cams: Cameras) -> torch.Tensor:
    """MVDream conditioning ``[B, 16]`` (on the cameras' device) of a batch of our cameras."""
    return mvdream_camera_from_view(cams.view)
