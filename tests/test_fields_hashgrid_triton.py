"""The Triton hash grid equals the torch reference (values, table and point gradients), and the
backend selection / preflight around it.

No GPU here: the kernels run in Triton's interpreter (``TRITON_INTERPRET=1``, numpy on CPU
tensors). Triton reads that variable when a kernel is *defined* (at the import of
``a3d_mesh.fields.hashgrid_triton``), so the kernel cases run in one child process started with
it set (this file run as a script, :func:`_worker`); the pytest process itself is left alone. The
cases are small (a few hundred points, 4 levels): the interpreter is slow.

Where triton comes from: the environment's own, else a side folder (``A3D_TRITON_SITE``, default
``.cache/triton-site``: ``pip install --target .cache/triton-site "triton>=3.0"``) put on the
children's ``PYTHONPATH`` only. Why not the main environment on a CPU machine: once Mesa's
llvmpipe EGL context is up (the OpenGL visibility pass, the gallery), ``import triton`` (which
torch._dynamo and diffusers do by themselves whenever triton is installed) crashes the process
with a segmentation fault (two LLVMs in one process). The kernel tests skip only when neither
place has an importable triton.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
TRITON_SITE = Path(os.environ.get("A3D_TRITON_SITE", REPO / ".cache" / "triton-site"))


def child_env(interpret: bool) -> dict[str, str]:
    """Environment of a child process: the repo (and the triton side folder, when it has triton)
    on ``PYTHONPATH``, ``TRITON_INTERPRET`` on or off, no user switches that change the outcome."""
    paths = [str(REPO)] + ([str(TRITON_SITE)] if (TRITON_SITE / "triton").is_dir() else [])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths + [os.environ.get("PYTHONPATH", "")])}
    for name in ("A3D_NO_TRITON", "A3D_STRICT_BACKENDS", "TRITON_INTERPRET"):
        env.pop(name, None)
    if interpret:
        env["TRITON_INTERPRET"] = "1"
    return env


def skip_or_fail(reason: str) -> None:
    """Skip where triton is not installed; in CI (``CI=true``, where .ci/run installs it) a missing
    triton is a failure, so the kernel is never silently left unchecked."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI must run the Triton kernel tests: {reason}")
    pytest.skip(reason)


def triton_skip_reason(env: dict[str, str]) -> str | None:
    """None when a child with ``env`` imports triton, else why not (the skip reason)."""
    probe = subprocess.run([sys.executable, "-c", "import triton"], capture_output=True, text=True, env=env,
                           timeout=300)
    if probe.returncode == 0:
        return None
    last = (probe.stderr.strip().splitlines() or ["?"])[-1]
    return f"triton cannot be imported ({last}); pip install --target {TRITON_SITE} 'triton>=3.0'"

# Dense levels (32 entries for 27 vertices: upper corners wrap; 216, not a power of two) and two
# hashed levels with 256 entries: many points share entries, so the atomic scatter-add matters.
MIXED = dict(n_levels=4, n_features_per_level=2, log2_hashmap_size=8, base_resolution=3, per_level_scale=1.7)


# ----------------------------------------------------------------------------------------------
# Child process: runs every case under the interpreter and prints one JSON line.


def _points(layouts: Any, n_random: int, seed: int) -> torch.Tensor:
    """[M, 3] float32: random points, the 8 cube corners, points exactly on cell faces of every
    level (``s_l x + 0.5`` an integer), and a few just outside the cube (negative cells wrap)."""
    gen = torch.Generator().manual_seed(seed)
    pts = [torch.rand(n_random, 3, generator=gen)]
    corners = torch.tensor([[(c >> d) & 1 for d in range(3)] for c in range(8)], dtype=torch.float32)
    pts.append(corners)
    for lay in layouts:
        k = torch.randint(0, lay.resolution, (16, 3), generator=gen).float()
        face = ((k - 0.5) / lay.scale).clamp(0, 1)
        mixed = torch.where(torch.rand(16, 3, generator=gen) < 0.5, face, torch.rand(16, 3, generator=gen))
        pts += [face, mixed]
    pts.append(torch.tensor([[-0.3, 0.5, 1.2], [1.05, -0.02, 0.0], [-1.0, -1.0, -1.0], [2.0, 0.3, 0.7]]))
    return torch.cat(pts).contiguous()


def _compare(cfg_kwargs: dict[str, Any], n_random: int, seed: int) -> dict[str, float]:
    """Max |triton - torch| of features, table gradient and point gradient (and their scales)."""
    from a3d_mesh.fields import HashGridConfig, hash_grid_encode, level_layouts, n_params
    from a3d_mesh.fields.hashgrid_triton import hash_grid_encode_triton

    cfg = HashGridConfig(**cfg_kwargs)
    layouts = level_layouts(cfg)
    gen = torch.Generator().manual_seed(seed)
    table = torch.rand(n_params(cfg), generator=gen) * 2 - 1  # O(1) values: a wrong entry shows
    x = _points(layouts, n_random, seed)
    upstream = torch.randn(x.shape[0], cfg.n_output_dims, generator=gen)
    res = {}
    for name, encode in (("ref", hash_grid_encode), ("tri", hash_grid_encode_triton)):
        p, xx = table.clone().requires_grad_(True), x.clone().requires_grad_(True)
        out = encode(xx, p, layouts, cfg.n_features_per_level)
        (out * upstream).sum().backward()
        res[name] = (out.detach(), p.grad, xx.grad)
    (f_ref, p_ref, x_ref), (f_tri, p_tri, x_tri) = res["ref"], res["tri"]
    return {
        "n_points": x.shape[0],
        "feat_err": (f_tri - f_ref).abs().max().item(),
        "feat_scale": f_ref.abs().max().item(),
        "pgrad_err": (p_tri - p_ref).abs().max().item(),
        "pgrad_scale": p_ref.abs().max().item(),
        "pgrad_nonzero": int((p_ref != 0).sum().item()),
        "xgrad_err": (x_tri - x_ref).abs().max().item(),
        "xgrad_scale": x_ref.abs().max().item(),
    }


def _case_grad_modes() -> dict[str, float]:
    """Table-only and point-only gradients, second order (create_graph) and an empty batch."""
    from a3d_mesh.fields import HashGridConfig, hash_grid_encode, level_layouts, n_params
    from a3d_mesh.fields.hashgrid_triton import hash_grid_encode_triton

    cfg = HashGridConfig(**MIXED)
    layouts, f = level_layouts(cfg), cfg.n_features_per_level
    gen = torch.Generator().manual_seed(3)
    table = torch.rand(n_params(cfg), generator=gen) * 2 - 1
    x = torch.rand(70, 3, generator=gen) * 0.9 + 0.05
    out: dict[str, float] = {}
    # Only the table needs a gradient: the kernel must not touch the points' gradient.
    grads = []
    for encode in (hash_grid_encode, hash_grid_encode_triton):
        p = table.clone().requires_grad_(True)
        encode(x, p, layouts, f).square().sum().backward()
        grads.append(p.grad)
    out["params_only_err"] = (grads[0] - grads[1]).abs().max().item()
    grads = []
    for encode in (hash_grid_encode, hash_grid_encode_triton):
        xx = x.clone().requires_grad_(True)
        encode(xx, table, layouts, f).sin().sum().backward()
        grads.append(xx.grad)
    out["x_only_err"] = (grads[0] - grads[1]).abs().max().item()
    # Second order: a loss on d(sum of features)/dx back-propagates to the table (analytic normals).
    grads = []
    for encode in (hash_grid_encode, hash_grid_encode_triton):
        p, xx = table.clone().requires_grad_(True), x.clone().requires_grad_(True)
        (gx,) = torch.autograd.grad(encode(xx, p, layouts, f).sum(), xx, create_graph=True)
        gx.square().sum().backward()
        grads.append(p.grad)
    out["second_order_err"] = (grads[0] - grads[1]).abs().max().item()
    out["second_order_scale"] = grads[0].abs().max().item()
    p, xx = table.clone().requires_grad_(True), torch.zeros(0, 3, requires_grad=True)
    empty = hash_grid_encode_triton(xx, p, layouts, f)
    empty.sum().backward()
    out["empty_shape_ok"] = float(tuple(empty.shape) == (0, cfg.n_output_dims) and p.grad.abs().sum().item() == 0)
    return out


def _case_module() -> dict[str, float]:
    """``HashGrid(backend="triton")`` on CPU inputs (interpreter) equals ``backend="torch"``."""
    from a3d_mesh.fields import HashGrid, HashGridConfig

    cfg = HashGridConfig(**MIXED)
    tri, ref = HashGrid(cfg, backend="triton", seed=5), HashGrid(cfg, backend="torch", seed=5)
    x = torch.rand(50, 3, generator=torch.Generator().manual_seed(4))
    auto_on_cpu = HashGrid(cfg, backend="auto").uses_triton(x)
    return {"module_err": (tri(x) - ref(x)).abs().max().item(), "uses_triton": float(tri.uses_triton(x)),
            "auto_uses_triton_on_cpu": float(auto_on_cpu)}


def _case_preflight() -> dict[str, Any]:
    """The preflight checks the Triton grid (tinycudann is not installed here) and keeps it; a
    kernel that is wrong is switched off with one warning, or stops a strict run."""
    from a3d_mesh import preflight as pf
    from a3d_mesh.fields import hashgrid, hashgrid_triton

    log: list[str] = []
    good = pf.preflight("cpu", log=log.append, accelerators=True).check("hash grid")
    real = hashgrid_triton.encode_forward
    hashgrid_triton.encode_forward = lambda *a: real(*a).flip(0)  # rows of the wrong points
    try:
        try:
            pf.preflight("cpu", strict=True, log=log.append, accelerators=True)
            strict_msg = ""
        except pf.BackendError as exc:
            strict_msg = str(exc)
        strict_left_enabled = hashgrid.triton_disabled() is None
        bad = pf.preflight("cpu", log=log.append, accelerators=True).check("hash grid")
    finally:
        hashgrid_triton.encode_forward = real
    return {"good": [good.implementation, good.status, good.note], "bad": [bad.implementation, bad.status],
            "log": log, "strict_msg": strict_msg, "strict_left_enabled": strict_left_enabled,
            "disabled": hashgrid.triton_disabled() or ""}


CASES: dict[str, Callable[[], dict[str, Any]]] = {
    "mixed": lambda: _compare(MIXED, 200, 0),
    "one_feature": lambda: _compare({**MIXED, "n_features_per_level": 1, "per_level_scale": 2.0}, 60, 1),
    "three_features": lambda: _compare({**MIXED, "n_features_per_level": 3, "n_levels": 2}, 60, 2),
    "four_features_big_table": lambda: _compare(
        dict(n_levels=3, n_features_per_level=4, log2_hashmap_size=19, base_resolution=16, per_level_scale=8.0), 60, 3),
    "grad_modes": _case_grad_modes,
    "module": _case_module,
    "preflight": _case_preflight,
}


def _worker() -> None:
    """Entry point of the child: one JSON line ``{case: metrics | {"error": traceback}}``."""
    os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported (the parent sets it too)
    try:
        import triton  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any failure means "cannot test the kernels here"
        print(json.dumps({"__skip__": f"triton cannot be imported: {type(exc).__name__}: {exc}"}))
        return
    torch.set_num_threads(1)
    results: dict[str, Any] = {}
    for name, case in CASES.items():
        try:
            results[name] = case()
        except Exception:  # noqa: BLE001 - reported per case by the parent
            results[name] = {"error": traceback.format_exc()}
    print(json.dumps(results))


# ----------------------------------------------------------------------------------------------
# Parent: pytest.


@pytest.fixture(scope="module")
def interpreted() -> dict[str, Any]:
    """Every case's metrics from one interpreter child process (about 20 s on 2 cores)."""
    env = child_env(interpret=True)
    if (reason := triton_skip_reason(env)) is not None:
        skip_or_fail(reason)
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve())], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    if "__skip__" in results:
        skip_or_fail(results["__skip__"])
    return results


def _case(results: dict[str, Any], name: str) -> dict[str, Any]:
    res = results[name]
    assert "error" not in res, res.get("error")
    return res


@pytest.mark.parametrize("name", ["mixed", "one_feature", "three_features", "four_features_big_table"])
def test_values_and_gradients_equal_the_torch_path(interpreted: dict[str, Any], name: str) -> None:
    res = _case(interpreted, name)
    assert res["feat_scale"] > 0.1 and res["pgrad_nonzero"] > 50 and res["xgrad_scale"] > 0.1  # real work
    assert res["feat_err"] <= 1e-6 * max(1.0, res["feat_scale"]), res
    # Atomic adds sum the table gradient in another order: float32 rounding only.
    assert res["pgrad_err"] <= 1e-5 * max(1.0, res["pgrad_scale"]), res
    assert res["xgrad_err"] <= 1e-5 * max(1.0, res["xgrad_scale"]), res


def test_gradient_modes_second_order_and_empty(interpreted: dict[str, Any]) -> None:
    res = _case(interpreted, "grad_modes")
    assert res["params_only_err"] <= 1e-5 and res["x_only_err"] <= 1e-4, res
    assert res["second_order_scale"] > 0.1 and res["second_order_err"] <= 1e-5 * res["second_order_scale"], res
    assert res["empty_shape_ok"] == 1.0


def test_module_backend_triton(interpreted: dict[str, Any]) -> None:
    res = _case(interpreted, "module")
    assert res["uses_triton"] == 1.0 and res["module_err"] <= 1e-7, res
    assert res["auto_uses_triton_on_cpu"] == 0.0  # auto takes Triton for CUDA inputs only


def test_preflight_checks_and_disables_triton(interpreted: dict[str, Any]) -> None:
    res = _case(interpreted, "preflight")
    assert res["good"][:2] == ["triton", "ok"], res
    assert res["strict_msg"].startswith("hash grid: triton failed on cpu: triton output differs"), res
    assert res["strict_left_enabled"]
    assert res["bad"] == ["torch", "fallback"], res
    assert res["log"] == [line for line in res["log"] if line.startswith("[preflight] warning: hash grid: triton ")]
    assert len(res["log"]) == 1 and res["log"][0].endswith("; using the torch reference instead"), res
    assert "output differs" in res["disabled"]


def test_kernels_compile_for_hopper_without_spills() -> None:
    """The interpreter does not check Triton's typing/constexpr rules or lowering; compiling every
    variant to an sm_90 cubin (no GPU needed) does. Default grid: 16 levels x 2 features."""
    code = ("import json, triton\n"
            "from a3d_mesh.fields import hashgrid_triton as ht\n"
            "print(json.dumps(ht.compile_kernels(90, 16, 2)))\n")
    env = child_env(interpret=False)
    if (reason := triton_skip_reason(env)) is not None:
        skip_or_fail(reason)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(lines) == 4 and all(": sm_90 ok, " in ln for ln in lines), lines
    for ln in lines:  # register spills would cost a lot of speed
        if "unknown" not in ln:
            assert " STACK:0 " in ln and ln.endswith("LOCAL:0"), ln


# ----------------------------------------------------------------------------------------------
# In-process (no triton needed): selection rules.


def test_importing_the_package_does_not_import_the_kernels() -> None:
    code = ("import sys, a3d_mesh, a3d_mesh.fields, a3d_mesh.preflight; "
            "assert 'a3d_mesh.fields.hashgrid_triton' not in sys.modules, 'imported eagerly'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300,
                          env=child_env(interpret=False))
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_auto_selection_order(monkeypatch: pytest.MonkeyPatch) -> None:
    from a3d_mesh.fields import HashGrid, HashGridConfig, hashgrid

    monkeypatch.delenv("A3D_NO_TRITON", raising=False)
    monkeypatch.delenv("A3D_NO_TCNN", raising=False)
    monkeypatch.setattr(hashgrid, "_TRITON_DISABLED", None)
    monkeypatch.setattr(hashgrid, "_TCNN_DISABLED", None)
    monkeypatch.setattr(hashgrid, "import_tcnn", lambda: None)
    monkeypatch.setattr(hashgrid, "import_triton", lambda: types.SimpleNamespace())
    grid = HashGrid(HashGridConfig(**MIXED), backend="auto")
    cuda_x, cpu_x = types.SimpleNamespace(is_cuda=True), torch.zeros(1, 3)
    assert grid.uses_triton(cuda_x) and not grid.uses_triton(cpu_x)
    assert not HashGrid(HashGridConfig(**MIXED), backend="torch").uses_triton(cuda_x)
    monkeypatch.setattr(hashgrid, "import_tcnn", lambda: types.SimpleNamespace())  # tinycudann first
    assert grid.uses_tcnn(cuda_x) and not grid.uses_triton(cuda_x)
    forced = HashGrid(HashGridConfig(**MIXED), backend="triton")
    assert forced.uses_triton(cuda_x) and not forced.uses_tcnn(cuda_x)
    monkeypatch.setattr(hashgrid, "import_tcnn", lambda: None)
    monkeypatch.setenv("A3D_NO_TRITON", "1")
    assert not grid.uses_triton(cuda_x) and forced.uses_triton(cuda_x)  # the switch only affects auto
    monkeypatch.setenv("A3D_NO_TRITON", "0")
    assert grid.uses_triton(cuda_x)
    hashgrid.disable_triton("disagrees")
    assert not grid.uses_triton(cuda_x) and hashgrid.triton_disabled() == "disagrees"
    monkeypatch.setattr(hashgrid, "import_triton", lambda: None)
    with pytest.raises(RuntimeError, match="triton is not importable"):
        HashGrid(HashGridConfig(**MIXED), backend="triton")


def test_forced_triton_needs_cuda_inputs(monkeypatch: pytest.MonkeyPatch) -> None:
    from a3d_mesh.fields import HashGrid, HashGridConfig, hashgrid

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(hashgrid, "import_triton", lambda: types.SimpleNamespace())
    with pytest.raises(RuntimeError, match="needs CUDA inputs"):
        HashGrid(HashGridConfig(**MIXED), backend="triton")(torch.rand(4, 3))


def test_preflight_on_cpu_does_not_try_triton(monkeypatch: pytest.MonkeyPatch) -> None:
    from a3d_mesh import preflight as pf
    from a3d_mesh.fields import hashgrid

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(hashgrid, "_TRITON_DISABLED", None)
    log: list[str] = []
    check = pf.preflight("cpu", log=log.append, accelerators=True).check("hash grid")
    assert log == [] and (check.implementation, check.status) == ("torch", "ok")
    assert "triton not used on cpu" in check.note or "triton not installed" in check.note, check.note


if __name__ == "__main__":
    _worker()
