"""Visibility through OpenGL (moderngl on a headless EGL context, e.g. Mesa llvmpipe).

A second, independent visibility backend: the GPU-style fixed-function pipeline (hardware or
llvmpipe) clips, rasterises with its own fill rules and depth-tests. Triangles are drawn
non-indexed so that ``gl_PrimitiveID`` is the triangle's index; the fragment shader writes
``id + 1`` into a float target (exact below 2**24 triangles) and ``z/w`` (recovered from ``gl_FragCoord.z``, which GL maps
from ``[-1, 1]`` to ``[0, 1]``) into a float target. The depth test uses a 32-bit float depth
texture. OpenGL's framebuffer row 0 is the bottom (clip ``y = -1``) and samples at pixel centres,
exactly nvdiffrast's convention, so no flip is needed.

Used as the fallback visibility backend and as the independent reference in the tests.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import torch

_VS = """
#version 330
in vec4 in_pos;
void main() { gl_Position = in_pos; }
"""
_FS = """
#version 330
uniform int id_offset;
layout(location = 0) out float out_id;
layout(location = 1) out float out_z;
void main() {
    out_id = float(gl_PrimitiveID + id_offset + 1);
    out_z = gl_FragCoord.z * 2.0 - 1.0;
}
"""

_CTX: Any = None
_PROG: Any = None
_ERROR: str | None = None
_LOCK = threading.Lock()


def _context() -> tuple[Any, Any] | None:
    """Create (once) the standalone EGL context and the shader program; None if impossible."""
    global _CTX, _PROG, _ERROR
    with _LOCK:
        if _CTX is None and _ERROR is None:
            try:
                import moderngl  # Lazy: optional dependency, needs libEGL at runtime.

                ctx = moderngl.create_standalone_context(backend="egl")
                _PROG = ctx.program(vertex_shader=_VS, fragment_shader=_FS)
                _CTX = ctx
            except Exception as exc:  # noqa: BLE001 - any driver/loader failure means "unavailable"
                _ERROR = f"{type(exc).__name__}: {exc}"
    return None if _CTX is None else (_CTX, _PROG)


def available() -> bool:
    """True when an EGL OpenGL 3.3 context can be created."""
    return _context() is not None


def visibility(pos: torch.Tensor, tri: torch.Tensor, resolution: tuple[int, int],
               ranges: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest triangle and its depth per pixel, via OpenGL.

    Args/returns as :func:`a3d_mesh.render._raster_c.visibility`: ``tri_id [B, H, W] int64``
    (-1 empty) and ``depth [B, H, W] float32`` (z/w, +inf where empty) on ``pos``'s device.
    Depth here is the GL depth value (float32 interpolation in screen space).
    """
    got = _context()
    if got is None:
        raise RuntimeError(f"OpenGL (EGL) unavailable: {_ERROR}")
    ctx, prog = got
    H, W = int(resolution[0]), int(resolution[1])
    p = pos.detach().to("cpu", torch.float32)
    t = tri.detach().to("cpu", torch.int64)
    if ranges is None:
        B = p.shape[0]
        spans = [(b, 0, t.shape[0]) for b in range(B)]
    else:
        r = ranges.detach().to("cpu", torch.int64)
        B = r.shape[0]
        spans = [(0, int(r[b, 0]), int(r[b, 1])) for b in range(B)]
    ids = np.full((B, H, W), -1, np.int64)
    depth = np.full((B, H, W), np.inf, np.float32)
    with _LOCK:
        col_id = ctx.renderbuffer((W, H), components=1, dtype="f4")
        col_z = ctx.renderbuffer((W, H), components=1, dtype="f4")
        dep = ctx.depth_texture((W, H))
        fbo = ctx.framebuffer(color_attachments=[col_id, col_z], depth_attachment=dep)
        try:
            fbo.use()
            ctx.enable(ctx.DEPTH_TEST)
            ctx.disable(ctx.CULL_FACE)
            for b, (pb, first, count) in enumerate(spans):
                fbo.clear(0.0, 0.0, 0.0, 0.0, depth=1.0)
                if count <= 0:
                    continue
                src = p[pb] if ranges is None else p
                verts = src[t[first:first + count].reshape(-1)]
                vbo = ctx.buffer(verts.numpy().astype(np.float32).tobytes())
                vao = ctx.vertex_array(prog, [(vbo, "4f", "in_pos")])
                prog["id_offset"].value = first
                vao.render()
                raw_id = np.frombuffer(fbo.read(components=1, attachment=0, dtype="f4"), np.float32)
                raw_z = np.frombuffer(fbo.read(components=1, attachment=1, dtype="f4"), np.float32)
                raw_id = raw_id.reshape(H, W).astype(np.int64)
                hit = raw_id > 0
                ids[b][hit] = raw_id[hit] - 1
                depth[b][hit] = raw_z.reshape(H, W)[hit]
                vao.release()
                vbo.release()
        finally:
            fbo.release()
            dep.release()
            col_id.release()
            col_z.release()
    return torch.from_numpy(ids).to(pos.device), torch.from_numpy(depth).to(pos.device)
