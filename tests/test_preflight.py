"""The preflight: every backend runs a tiny forward + backward before training; a broken or wrong
accelerator is replaced by the reference with one warning line (or, strict, stops the run with one
line, exit 1); nvdiffrast < 0.3.4's plugin imports on torch >= 2.9.

No CUDA here: the accelerators are fake packages written to a temporary folder on ``sys.path`` that
accept CPU tensors, and the preflight is told to try them (``accelerators=True``, or its device rule
patched for the CLI). The fake nvdiffrast 0.3.3.1 reproduces the plugin loader of the real one on
torch >= 2.9: its ``_get_plugin`` builds the plugin into torch's extension folder (not on
``sys.path``), loads it from the file without registering it, then imports it by name. Only a GPU
can show that the real plugin loads; this shows that our wrapper handles that failure mode.
"""

from __future__ import annotations

import contextlib
import sys
import types
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from a3d_mesh import backend_checks as bc
from a3d_mesh import preflight as pf
from a3d_mesh.fields import hashgrid
from a3d_mesh.geometry import marching
from a3d_mesh.render import _nvdr
from a3d_mesh.render import ops as render_ops
from a3d_mesh_cli.main import app

runner = CliRunner()

NVDR_OPS = '''
import importlib, importlib.util, os
import torch, torch.utils.cpp_extension
import nvdiffrast

_cached_plugin = {}
PLUGIN = """
import os, torch
from a3d_mesh.render import ops

def _mode():
    return os.environ.get("FAKE_NVDR_MODE", "good")

class Context:
    pass

def rasterize(pos, tri, resolution, ranges, grad_db):
    if _mode() == "raises":
        raise RuntimeError("CUDA error: no kernel image is available for execution on the device\\\\nmore detail")
    rast, db = ops.rasterize(pos, tri.long(), resolution, ranges, grad_db, backend="cpu")
    return (rast.flip(1), db.flip(1)) if _mode() == "flipped" else (rast, db)

def interpolate(attr, rast, tri, rast_db, diff_attrs):
    return ops.interpolate(attr, rast, tri.long(), rast_db, diff_attrs, backend="cpu")

def antialias(color, rast, pos, tri, topology_hash, pos_gradient_boost):
    return ops.antialias(color, rast, pos, tri.long(), None, pos_gradient_boost, backend="cpu")
"""


def _import_module_from_library(name, folder):
    # torch >= 2.9: executes the file as a module without registering it in sys.modules.
    path = os.path.join(folder, name + ".py")
    if not os.path.exists(path):
        raise ImportError(path)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _load(name, folder):
    # cpp_extension.load: builds into its folder (not on sys.path) and returns the module.
    with open(os.path.join(folder, name + ".py"), "w") as f:
        f.write(PLUGIN)
    return _import_module_from_library(name, folder)


def _get_plugin(gl=False):
    if _cached_plugin.get(gl) is not None:
        return _cached_plugin[gl]
    name = "nvdiffrast_plugin_%s_fake" % nvdiffrast.__version__.replace(".", "_")
    folder = torch.utils.cpp_extension._get_build_directory(name, False)
    try:
        _import_module_from_library(name, folder)
    except ImportError:
        _load(name, folder)
    _cached_plugin[gl] = importlib.import_module(name)
    return _cached_plugin[gl]


class RasterizeCudaContext:
    def __init__(self, device=None):
        self.plugin = _get_plugin()


def rasterize(glctx, pos, tri, resolution, ranges=None, grad_db=True):
    return _get_plugin().rasterize(pos, tri, resolution, ranges, grad_db)


def interpolate(attr, rast, tri, rast_db=None, diff_attrs=None):
    return _get_plugin().interpolate(attr, rast, tri, rast_db, diff_attrs)


def antialias(color, rast, pos, tri, topology_hash=None, pos_gradient_boost=1.0):
    return _get_plugin().antialias(color, rast, pos, tri, topology_hash, pos_gradient_boost)
'''

TCNN = '''
import torch
from a3d_mesh.fields.hashgrid_layout import HashGridConfig, level_layouts, n_params
from a3d_mesh.fields.hashgrid_torch import hash_grid_encode

KEYS = ("n_levels", "n_features_per_level", "log2_hashmap_size", "base_resolution", "per_level_scale")


class Encoding(torch.nn.Module):
    def __init__(self, n_input_dims, encoding_config, seed=1337, dtype=None):
        super().__init__()
        if BROKEN:
            raise RuntimeError("Could not find compatible tinycudann extension for compute capability 90.\\nmore")
        self.cfg = HashGridConfig(**{k: encoding_config[k] for k in KEYS})
        self.params = torch.nn.Parameter(torch.zeros(n_params(self.cfg)))

    def forward(self, x):
        return hash_grid_encode(x, self.params, level_layouts(self.cfg), self.cfg.n_features_per_level)
'''

KAOLIN_CONVERSIONS = '''
from a3d_mesh.geometry.marching import _marching_torch


def marching_tetrahedra(verts, tets, sdf, return_tet_idx=False):
    v, f = _marching_torch(verts[0], tets, sdf[0], False)
    return [v], [f[:, [0, 2, 1]]]  # wrong winding: runs, but the faces point inwards
'''


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.fixture()
def fakes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A folder on sys.path for fake accelerator packages; every backend's state restored after."""
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.setattr(sys, "path", [str(root), *sys.path])
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "torch_extensions"))
    monkeypatch.delenv(pf.STRICT_ENV, raising=False)
    monkeypatch.delenv("A3D_NO_TCNN", raising=False)
    for mod, names in ((_nvdr, ("_IMPORT_ERROR", "_DISABLED")), (hashgrid, ("_TCNN_IMPORT_ERROR", "_TCNN_DISABLED")),
                       (marching, ("_KAOLIN_DISABLED",))):
        for name in names:
            monkeypatch.setattr(mod, name, None)
    monkeypatch.setattr(_nvdr, "_CTX", {})
    # The fake tinycudann takes CPU tensors; tinycudann's device context only accepts CUDA devices.
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
    hashgrid.import_tcnn.cache_clear()

    def drop_modules() -> None:
        for name in list(sys.modules):
            if name.split(".")[0] in ("tinycudann", "kaolin") or name.startswith("nvdiffrast"):
                del sys.modules[name]

    drop_modules()
    yield root
    drop_modules()
    hashgrid.import_tcnn.cache_clear()


def fake_nvdiffrast(root: Path, version: str = "0.3.3.1", dist: str = "diffrp_nvdiffrast") -> None:
    _write(root, {"nvdiffrast/__init__.py": f"__version__ = {version!r}\n",
                  "nvdiffrast/torch/__init__.py": "from .ops import *\nfrom .ops import _get_plugin\n",
                  "nvdiffrast/torch/ops.py": NVDR_OPS,
                  f"{dist}-{version}.dist-info/METADATA":
                      f"Metadata-Version: 2.1\nName: {dist.replace('_', '-')}\nVersion: {version}\n",
                  f"{dist}-{version}.dist-info/top_level.txt": "nvdiffrast\n"})


def fake_tinycudann(root: Path, broken: bool) -> None:
    _write(root, {"tinycudann/__init__.py": f"BROKEN = {broken}\n" + TCNN})


def fake_kaolin(root: Path) -> None:
    _write(root, {"kaolin/__init__.py": "", "kaolin/ops/__init__.py": "",
                  "kaolin/ops/conversions.py": KAOLIN_CONVERSIONS})


class Log(list):
    def __call__(self, line: str) -> None:
        self.append(line)


def test_reference_paths_pass_on_cpu(fakes: Path) -> None:
    log = Log()
    report = pf.preflight("cpu", log=log)
    assert [c.backend for c in report.checks] == list(pf.BACKENDS)
    assert [c.implementation for c in report.checks] == ["cpu path", "torch", "torch"]
    assert all(c.status == "ok" and c.version.startswith("torch ") for c in report.checks)
    assert report.fallbacks == [] and log == []
    assert len(report.lines()) == 3 and report.lines()[1].startswith("hash grid: torch (torch ")
    # The tiny scenes are not empty: the checks exercise real work.
    ras = bc.check_rasteriser(torch.device("cpu"), False)
    assert (ras["rast"][..., 3] > 0).float().mean() > 0.1 and ras["grad"].abs().sum() > 0
    assert bc.check_marching(torch.device("cpu"), False)["faces"].shape[0] > 50


def test_fake_plugin_loader_fails_alone_and_imports_with_the_fix(fakes: Path, tmp_path: Path) -> None:
    fake_nvdiffrast(fakes)
    import nvdiffrast.torch as dr

    with pytest.raises(ModuleNotFoundError, match="nvdiffrast_plugin_0_3_3_1_fake"):
        dr._get_plugin()  # what torch >= 2.9 users saw: built, then not importable by name
    plugin = "nvdiffrast_plugin_0_3_3_1_fake"
    assert (tmp_path / "torch_extensions" / plugin / f"{plugin}.py").exists()  # the build itself succeeded
    assert _nvdr.module() is dr
    ops_mod = sys.modules["nvdiffrast.torch.ops"]
    assert getattr(ops_mod._get_plugin, "_a3d_importable", False)
    assert ops_mod._get_plugin().__name__ == "nvdiffrast_plugin_0_3_3_1_fake"
    assert _nvdr.version() == "diffrp-nvdiffrast 0.3.3.1"
    # Through our wrapper the fake (a correct one) renders what the CPU path renders.
    pos, tri, attr = bc.random_triangles(8)
    rast, _ = _nvdr.rasterize(pos, tri, (32, 32), None, True)
    ref, _ = render_ops.rasterize(pos, tri, (32, 32), backend="cpu")
    assert torch.equal(rast, ref)


def test_nvlabs_nvdiffrast_is_left_alone(fakes: Path) -> None:
    fake_nvdiffrast(fakes, version="0.4.0", dist="nvdiffrast")
    assert _nvdr.module() is not None
    assert not hasattr(sys.modules["nvdiffrast.torch.ops"]._get_plugin, "_a3d_importable")
    assert _nvdr.version() == "nvdiffrast 0.4.0"


def test_working_accelerators_are_chosen(fakes: Path) -> None:
    fake_nvdiffrast(fakes)
    fake_tinycudann(fakes, broken=False)
    log = Log()
    report = pf.preflight("cpu", log=log, accelerators=True)
    assert log == [] and report.fallbacks == []
    assert report.check("rasteriser").implementation == "nvdiffrast"
    assert report.check("rasteriser").version == "diffrp-nvdiffrast 0.3.3.1"
    assert report.check("hash grid").implementation == "tinycudann"
    assert report.check("marching tets").note == "kaolin not installed"
    assert _nvdr.disabled() is None and hashgrid.tcnn_disabled() is None


@pytest.mark.parametrize("mode, cause", [
    ("import", "ImportError: libcudart.so.13: cannot open shared object file"),
    ("raises", "RuntimeError: CUDA error: no kernel image is available for execution on the device"),
    ("flipped", "nvdiffrast disagrees with the CPU path on"),
])
def test_broken_nvdiffrast_falls_back_with_one_warning(fakes: Path, monkeypatch: pytest.MonkeyPatch, mode: str,
                                                       cause: str) -> None:
    fake_nvdiffrast(fakes)
    if mode == "import":
        (fakes / "nvdiffrast/torch/__init__.py").write_text(
            "raise ImportError('libcudart.so.13: cannot open shared object file')\n")
    else:
        monkeypatch.setenv("FAKE_NVDR_MODE", mode)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # what auto would see on a GPU machine
    log = Log()
    report = pf.preflight("cpu", log=log, accelerators=True)
    assert len(log) == 1 and "\n" not in log[0], log
    assert log[0].startswith(f"[preflight] warning: rasteriser: nvdiffrast failed ({cause}")
    assert log[0].endswith("); using the cpu path reference instead")
    check = report.check("rasteriser")
    assert (check.implementation, check.status) == ("cpu path", "fallback")
    assert cause in check.note and cause in _nvdr.disabled()
    # Switched off for the rest of the process: auto takes the CPU path.
    assert not _nvdr.available() and render_ops.available_backends() == ["cpu"]
    # A second preflight (export after training) reports it again without a second warning.
    assert pf.preflight("cpu", log=log, accelerators=True).check("rasteriser").status == "fallback"
    assert len(log) == 1


def test_broken_tinycudann_falls_back(fakes: Path) -> None:
    fake_tinycudann(fakes, broken=True)
    log = Log()
    report = pf.preflight("cpu", log=log, accelerators=True)
    assert log == ["[preflight] warning: hash grid: tinycudann failed (RuntimeError: Could not find compatible "
                   "tinycudann extension for compute capability 90.); using the torch reference instead"]
    assert report.check("hash grid").status == "fallback"
    assert report.check("rasteriser").status == "ok"  # nvdiffrast is simply not installed
    assert hashgrid.tcnn_disabled() is not None
    grid = hashgrid.HashGrid(bc._CHECK_GRID, backend="auto")
    assert not grid.uses_tcnn(types.SimpleNamespace(is_cuda=True))  # auto on a CUDA input: torch path


def test_wrong_kaolin_falls_back(fakes: Path) -> None:
    fake_kaolin(fakes)
    assert marching._kaolin_available()
    log = Log()
    report = pf.preflight("cpu", log=log, accelerators=True)
    assert len(log) == 1
    assert log[0].startswith("[preflight] warning: marching tets: kaolin failed (kaolin's faces differ")
    assert report.check("marching tets").status == "fallback"
    assert not marching._kaolin_available()


def test_strict_raises_one_line(fakes: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_nvdiffrast(fakes)
    monkeypatch.setenv("FAKE_NVDR_MODE", "raises")
    with pytest.raises(pf.BackendError) as err:
        pf.preflight("cpu", strict=True, log=Log(), accelerators=True)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("rasteriser: nvdiffrast failed on cpu: RuntimeError: CUDA error")
    assert _nvdr.disabled() is None  # strict stops; it does not quietly switch anything off
    monkeypatch.setenv(pf.STRICT_ENV, "1")
    with pytest.raises(pf.BackendError, match="strict backends"):
        pf.preflight("cpu", log=Log(), accelerators=True)


def test_reference_failure_is_an_error(fakes: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("out of memory\nsecond line")

    monkeypatch.setattr(marching, "_marching_torch", broken)
    with pytest.raises(pf.BackendError) as err:
        pf.preflight("cpu", log=Log())
    assert str(err.value) == "marching tets: the torch reference failed on cpu: RuntimeError: out of memory"


def test_info_prints_backend_lines(fakes: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    res = runner.invoke(app, ["info"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    for backend in pf.BACKENDS:
        assert sum(ln.startswith(f"{backend}: ") for ln in lines) == 1, res.output
    assert any(ln.startswith("rasteriser: cpu path (torch ") and " ok, " in ln for ln in lines)
    # A broken accelerator shows as a fallback with its cause.
    fake_nvdiffrast(fakes)
    monkeypatch.setenv("FAKE_NVDR_MODE", "raises")
    monkeypatch.setattr(pf, "_wants_accelerators", lambda device: True)
    res = runner.invoke(app, ["info"])
    assert res.exit_code == 0, res.output
    assert any(ln.startswith("rasteriser: cpu path (") and " fallback, " in ln and "CUDA error" in ln
               for ln in res.output.splitlines()), res.output


@pytest.mark.parametrize("by_env", [True, False])
def test_strict_run_stops_before_training(fakes: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                          by_env: bool) -> None:
    fake_nvdiffrast(fakes)
    monkeypatch.setenv("FAKE_NVDR_MODE", "flipped")
    if by_env:
        monkeypatch.setenv(pf.STRICT_ENV, "1")
    monkeypatch.setattr(pf, "_wants_accelerators", lambda device: True)
    prompts = tmp_path / "pets.txt"
    prompts.write_text("dog: a dog\ncat: a cat\n")
    out = tmp_path / "run"
    args = ["run", str(prompts), "--preset", "tiny", "--out", str(out)] + ([] if by_env else ["strict_backends=true"])
    res = runner.invoke(app, args)
    assert res.exit_code == 1, res.output
    errors = [ln for ln in res.output.splitlines() if ln.startswith("a3d-mesh: error:")]
    assert len(errors) == 1 and "rasteriser: nvdiffrast failed on cpu: nvdiffrast disagrees" in errors[0], res.output
    assert "Traceback" not in res.output
    assert not list(out.rglob("*.pt"))  # stopped before any training step
