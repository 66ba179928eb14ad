"""Preflight: every backend a run will use runs a tiny forward and backward before training.

Backends (optional CUDA accelerator / reference on any device): rasteriser (nvdiffrast / the CPU
path of ``render.ops``), hash grid (tinycudann, else the Triton kernels / torch), marching tets
(kaolin / torch).
On a CUDA device each installed, enabled accelerator runs a tiny scene (:mod:`a3d_mesh.backend_checks`) forward and backward next to the reference; its
outputs and gradients must be finite and agree with the reference's at a loose tolerance (a backend
that runs but is wrong is as bad as one that does not load). An accelerator that fails is switched
off for the rest of the process (``_nvdr.disable``, ``hashgrid.disable_tcnn``,
``hashgrid.disable_triton``, ``marching.disable_kaolin``; every ``auto`` selection respects them)
with ONE warning line naming the backend and the first line of the cause, or, when strict, raises
:class:`BackendError`. The hash grid has a chain of two accelerators, in ``auto``'s order: when
tinycudann is not used (not installed, switched off, failed), the Triton kernels are checked next
(on CUDA only), so whatever ``auto`` will pick has been compared with the reference. The
reference failing is always a :class:`BackendError`. A run calls :func:`preflight` before it builds
its guides, so no accelerator can fail after training started; ``a3d-mesh info`` prints the report.

Strict: ``preflight(..., strict=True)``, the config key ``strict_backends: true``, or the
environment variable ``A3D_STRICT_BACKENDS=1`` (any of them turns it on).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import Callable

import torch

from a3d_mesh.backend_checks import (_dist_version, _installed, check_hash_grid, check_hash_grid_triton,
                                     check_marching, check_rasteriser)
from a3d_mesh.errors import A3DMeshError, first_line
from a3d_mesh.fields import hashgrid
from a3d_mesh.geometry import marching
from a3d_mesh.render import _nvdr
from a3d_mesh.render import ops as render_ops

STRICT_ENV = "A3D_STRICT_BACKENDS"
BACKENDS = ("rasteriser", "hash grid", "marching tets")

class BackendError(A3DMeshError, RuntimeError):
    """A backend that cannot run on the run's device (one-line message; exit code 1 in the CLI)."""

    exit_code = 1


@dataclass(frozen=True)
class BackendCheck:
    """The outcome for one backend.

    Attributes:
        backend: one of :data:`BACKENDS`.
        implementation: what the run will use: ``"nvdiffrast"`` | ``"cpu path"``,
            ``"tinycudann"`` | ``"torch"``, ``"kaolin"`` | ``"torch"``.
        version: e.g. ``"diffrp-nvdiffrast 0.3.3.1"``, ``"torch 2.11.0, c visibility"``.
        status: ``"ok"``, or ``"fallback"``: an installed accelerator failed (or was switched off
            earlier in this process) and the reference replaces it.
        seconds: wall time of this backend's checks (reference and accelerator).
        note: one line: why the accelerator is not used (the failure's first line, "... not
            installed", "... not used on cpu"); empty when it is.
    """

    backend: str
    implementation: str
    version: str
    status: str
    seconds: float
    note: str = ""

    def line(self) -> str:
        """``"rasteriser: nvdiffrast (diffrp-nvdiffrast 0.3.3.1) ok, 0.12 s"``, plus the note."""
        note = f"; {self.note}" if self.note else ""
        return f"{self.backend}: {self.implementation} ({self.version}) {self.status}, {self.seconds:.2f} s{note}"


@dataclass(frozen=True)
class PreflightReport:
    """What :func:`preflight` found: one :class:`BackendCheck` per backend, in :data:`BACKENDS` order."""

    device: str
    checks: tuple[BackendCheck, ...]

    @property
    def fallbacks(self) -> list[BackendCheck]:
        """The backends whose accelerator was replaced by the reference."""
        return [c for c in self.checks if c.status == "fallback"]

    def check(self, backend: str) -> BackendCheck:
        """The check of ``backend`` (one of :data:`BACKENDS`)."""
        return next(c for c in self.checks if c.backend == backend)

    def lines(self) -> list[str]:
        """One line per backend (what ``a3d-mesh info`` prints)."""
        return [c.line() for c in self.checks]


def strict_from_env() -> bool:
    """True when ``A3D_STRICT_BACKENDS`` is set to a truthy value (not "", 0, false, no)."""
    return os.environ.get(STRICT_ENV, "").strip().lower() not in ("", "0", "false", "no")


# ----------------------------------------------------------------------------------------------
# The preflight.


@dataclass
class _Backend:
    """How to check, name, version and switch off one backend's accelerator."""

    backend: str
    accelerator: str  # also its import name
    reference: str
    check: Callable[[torch.device, bool], dict[str, torch.Tensor]]
    disabled: Callable[[], str | None]  # the reason it was switched off, else None
    load_error: Callable[[], str | None]  # imports it; the failure's "Type: message", or None
    version: Callable[[], str]
    disable: Callable[[str], None]
    ref_version: Callable[[], str]
    opted_out: Callable[[], bool] = lambda: False  # the user's own switch (A3D_NO_TCNN)
    opt_out_env: str = ""  # the name of that switch, for the note
    runs_on: Callable[[torch.device], bool] = lambda device: True  # devices it can take tensors on
    then: _Backend | None = None  # the accelerator ``auto`` uses when this one is not used


def _torch_version() -> str:
    return f"torch {torch.__version__.split('+')[0]}"


def _backends() -> list[_Backend]:
    return [
        _Backend("rasteriser", "nvdiffrast", "cpu path", check_rasteriser, _nvdr.disabled,
                 lambda: None if _nvdr.module() is not None else _nvdr.import_error() or "import failed",
                 _nvdr.version, _nvdr.disable,
                 lambda: f"{_torch_version()}, {render_ops.visibility_engine()} visibility"),
        _Backend("hash grid", "tinycudann", "torch", check_hash_grid, hashgrid.tcnn_disabled,
                 lambda: None if hashgrid.import_tcnn() else hashgrid.tcnn_import_error() or "import failed",
                 lambda: _dist_version("tinycudann"), hashgrid.disable_tcnn, _torch_version,
                 hashgrid.tcnn_disabled_by_env, "A3D_NO_TCNN",
                 then=_Backend("hash grid", "triton", "torch", check_hash_grid_triton, hashgrid.triton_disabled,
                               lambda: None if hashgrid.import_triton() else hashgrid.triton_import_error()
                               or "import failed", lambda: _dist_version("triton"), hashgrid.disable_triton,
                               _torch_version, hashgrid.triton_disabled_by_env, hashgrid.NO_TRITON_ENV,
                               # Triton takes CUDA tensors; CPU ones only in its interpreter (tests).
                               lambda device: device.type == "cuda" or hashgrid.triton_interpreting())),
        _Backend("marching tets", "kaolin", "torch", check_marching, marching.kaolin_disabled,
                 marching.kaolin_import_error, lambda: _dist_version("kaolin"), marching.disable_kaolin,
                 _torch_version),
    ]


def _wants_accelerators(device: torch.device) -> bool:
    """Whether ``auto`` selections on ``device`` would use the accelerators: on CUDA only."""
    return device.type == "cuda"


def _try_accelerator(acc: _Backend, device: torch.device, try_acc: bool, strict: bool
                     ) -> tuple[str, str, str | None]:
    """Decide whether one accelerator is used: ``("used", "", None)`` when it passed its check,
    ``("skipped", note, None)`` when it is not installed, not tried on this device or opted out,
    ``("fallback", note, cause)`` when it was switched off earlier (cause None) or failed now (cause:
    the failure's first line; the caller disables it and warns).

    Raises:
        BackendError: strict, and it failed now.
    """
    if not _installed(acc.accelerator):  # first: on a CPU machine "not installed" is the news
        return "skipped", f"{acc.accelerator} not installed", None
    if not try_acc or not acc.runs_on(device):
        return "skipped", f"{acc.accelerator} not used on {device.type}", None
    if acc.opted_out():
        return "skipped", f"{acc.accelerator} switched off by {acc.opt_out_env}", None
    if (off := acc.disabled()) is not None:
        return "fallback", f"{acc.accelerator} disabled: {off}", None
    try:
        cause = acc.load_error()
        cause = None if cause is None else first_line(cause)
    except Exception as exc:  # noqa: BLE001 - an import that fails in an unexpected way
        cause = first_line(exc)
    if cause is None:
        try:
            acc.check(device, True)
            return "used", "", None
        except Exception as exc:  # noqa: BLE001 - any failure of an optional library means "replace it"
            cause = first_line(exc)
    if strict:
        raise BackendError(f"{acc.backend}: {acc.accelerator} failed on {device}: {cause} "
                           f"(strict backends: unset {STRICT_ENV} and strict_backends to fall back)")
    return "fallback", f"{acc.accelerator} disabled: {cause}", cause


def summary(report: PreflightReport) -> str:
    """One line for a run's log: ``"[preflight] cuda: rasteriser nvdiffrast, hash grid torch, ..."``."""
    parts = ", ".join(f"{c.backend} {c.implementation}{' (fallback)' if c.status == 'fallback' else ''}"
                      for c in report.checks)
    return f"[preflight] {report.device}: {parts} ({sum(c.seconds for c in report.checks):.2f} s)"


def preflight(device: torch.device | str, strict: bool = False, log: Callable[[str], None] | None = None,
              accelerators: bool | None = None) -> PreflightReport:
    """Run every backend a run on ``device`` will use: tiny forward + backward, finite, agreeing.

    Args:
        device: the run's device. On ``cuda`` the installed, enabled accelerators are tried; on
            ``cpu`` only the references run (``auto`` never picks an accelerator for CPU tensors).
        strict: a failing accelerator raises :class:`BackendError` instead of falling back. Also
            on when ``A3D_STRICT_BACKENDS`` is truthy (:func:`strict_from_env`).
        log: where the one-line fallback warnings go (default: stderr).
        accelerators: try the accelerators whatever the device (True) or never (False); None
            (default) means ``device.type == "cuda"``. True on a CPU device is for tests with fake
            accelerator modules that accept CPU tensors.
    Returns:
        A :class:`PreflightReport`. A failing accelerator is disabled for the rest of the process
        (``auto`` selections then take the reference) and reported as ``"fallback"``.
    Raises:
        BackendError: the reference path fails, or (strict) an accelerator fails or was disabled.
    """
    device = torch.device(device)
    strict = strict or strict_from_env()
    log = log if log is not None else (lambda text: print(text, file=sys.stderr))
    try_acc = _wants_accelerators(device) if accelerators is None else accelerators
    checks = []
    for b in _backends():
        t0 = time.perf_counter()
        try:  # the reference first: it must work, and an accelerator's failure must not hide its own
            b.check(device, False)
        except Exception as exc:  # noqa: BLE001 - say which backend and why, in one line
            raise BackendError(f"{b.backend}: the {b.reference} reference failed on {device}: "
                               f"{first_line(exc)}") from None
        impl, version, status, notes, failed = b.reference, b.ref_version(), "ok", [], []
        acc: _Backend | None = b
        while acc is not None:  # the chain in auto's order; the first that passes is used
            outcome, acc_note, cause = _try_accelerator(acc, device, try_acc, strict)
            if outcome == "used":
                impl, version = acc.accelerator, acc.version()
                break
            notes.append(acc_note)
            if outcome == "fallback":
                status = "fallback"
                if cause is not None:
                    acc.disable(cause)
                    failed.append((acc.accelerator, cause))
            acc = acc.then
        note = "; ".join(notes)
        # Warned after the chain so that the line names what is used instead.
        instead = f"the {b.reference} reference" if impl == b.reference else impl
        for name, cause in failed:
            log(f"[preflight] warning: {b.backend}: {name} failed ({cause}); using {instead} instead")
        if status == "fallback" and strict:
            raise BackendError(f"{b.backend}: {note} (strict backends)")
        checks.append(BackendCheck(b.backend, impl, version, status, time.perf_counter() - t0, note))
    return PreflightReport(str(device), tuple(checks))
