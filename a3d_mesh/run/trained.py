"""The trained set: the shared DMTet and colour models of a run, read back from its folder.

Training saves the two models with their own configs under ``RUN_DIR/models/`` (diffusers-style
``config.json`` + ``model.safetensors``, :mod:`a3d_mesh.models`); reading them back needs no
training code. Runs saved before that (only ``checkpoints/refine.pt``), and runs stopped mid-refine,
are read from the refine checkpoint, with the architecture taken from ``config.yaml`` through
:func:`model_configs`, the one statement of how a run's config shapes its models (training builds
its fields from it too).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from a3d_mesh.checkpoint import load_checkpoint, restore
from a3d_mesh.config import ConfigError, RunConfig
from a3d_mesh.errors import RunError
from a3d_mesh.fields import NeRFField
from a3d_mesh.geometry import DMTetField
from a3d_mesh.models import CONFIG_NAME
from a3d_mesh.preflight import preflight
from a3d_mesh.prompts import PromptSet
from a3d_mesh.run.folder import CHECKPOINTS, MODELS, read_run
from a3d_mesh.simplex import Code, corner


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when there is one, else CPU; a CUDA device asked for but absent is a ConfigError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device '{name}' asked for, but this torch has no CUDA device (use device=cpu)")
    return torch.device(name)


def model_configs(cfg: RunConfig, n_objects: int) -> dict[str, dict[str, Any]]:
    """The constructor configs of a run's two models: ``{"dmtet": ..., "color": ...}``.

    The colour field is the coarse stage's NeRF (density + albedo over one shared grid), carried
    into the refine stage, where only its albedo is used.
    """
    c, r = cfg.coarse, cfg.refine
    return {
        "dmtet": dict(n_codes=n_objects, resolution=r.tet_resolution, grid=r.grid, hidden=r.hidden, bound=cfg.bound),
        "color": dict(n_codes=n_objects, grid=c.grid, hidden=c.hidden, bound=cfg.bound, blob_density=c.blob_density,
                      blob_radius=c.blob_radius),
    }


def color_field(cfg: RunConfig, n_objects: int) -> NeRFField:
    """A fresh colour (coarse NeRF) field of the run's architecture."""
    return NeRFField.from_config(model_configs(cfg, n_objects)["color"])


def dmtet_field(cfg: RunConfig, n_objects: int) -> DMTetField:
    """A fresh shared DMTet field of the run's architecture."""
    return DMTetField.from_config(model_configs(cfg, n_objects)["dmtet"])


def save_models(run_dir: Path, dmtet: DMTetField, color: NeRFField) -> Path:
    """Write the trained set's models into ``RUN_DIR/models/`` (each folder atomically per file)."""
    folder = Path(run_dir) / MODELS
    dmtet.save(folder / "dmtet")
    color.save(folder / "color")
    return folder


@dataclass
class TrainedSet:
    """The shared models of a finished (or checkpointed) refine stage, with the run's config and
    prompts: everything export, previews and hybrids need."""

    cfg: RunConfig
    prompts: PromptSet
    dmtet: DMTetField
    color: NeRFField
    device: torch.device

    @property
    def n(self) -> int:
        return len(self.prompts)

    def code(self, k: int) -> torch.Tensor:
        return corner(k, self.n, self.device)

    @torch.no_grad()
    def mesh(self, u: Code) -> tuple[torch.Tensor, torch.Tensor]:
        """World-frame mesh (verts [V,3], faces [F,3]) at a code [K] or a code field u(x)."""
        return self.dmtet.extract(u)

    def color_fn(self, u: Code) -> Callable[[torch.Tensor], torch.Tensor]:
        """Albedo at world points [N,3] -> [N,3] for a code or code field."""

        @torch.no_grad()
        def fn(p: torch.Tensor) -> torch.Tensor:
            p = p.to(self.device, torch.float32)
            code = u(p) if callable(u) else u
            return self.color(p, code)[1]

        return fn

    @classmethod
    def load(cls, run_dir: Path, device: str | None = None) -> "TrainedSet":
        """The set of a run folder: from ``models/`` when training finished and saved them, else
        from ``checkpoints/refine.pt`` (older runs, runs stopped mid-refine)."""
        run_dir = Path(run_dir)
        prompts, cfg = read_run(run_dir)
        models, ckpt = run_dir / MODELS, run_dir / CHECKPOINTS / "refine.pt"
        # config.json is written after the weights: both present means both models are whole.
        saved = all((models / m / CONFIG_NAME).is_file() for m in ("dmtet", "color"))
        if not saved and not ckpt.exists():
            raise RunError(f"{run_dir} is not a trained run (missing {CHECKPOINTS}/refine.pt)")
        dev = resolve_device(device or cfg.device)
        # export / hybrid rasterise too: a broken accelerator is switched off here, not mid-export.
        preflight(dev, strict=cfg.strict_backends)
        if saved:
            dmtet, color = DMTetField.load(models / "dmtet", dev), NeRFField.load(models / "color", dev)
            if dmtet.n_codes != len(prompts) or color.n_codes != len(prompts):
                raise RunError(f"{models} holds models of {dmtet.n_codes} objects, but the run has {len(prompts)} prompts")
            return cls(cfg, prompts, dmtet, color, dev)
        return cls.from_state(cfg, prompts, load_checkpoint(ckpt)["stage"], dev, source=ckpt)

    @classmethod
    def from_state(cls, cfg: RunConfig, prompts: PromptSet, state: dict[str, Any], device: torch.device,
                   source: Path | None = None) -> "TrainedSet":
        """Fresh fields of the run's architecture holding ``state`` (``{"dmtet": ..., "color": ...}``);
        ``source``: the checkpoint it was read from, named if the state does not fit."""
        n = len(prompts)
        with torch.random.fork_rng(devices=[]):  # the init is overwritten: keep the caller's RNG stream
            torch.manual_seed(0)
            dmtet, color = dmtet_field(cfg, n), color_field(cfg, n)

        def apply() -> None:
            dmtet.load_state_dict(state["dmtet"])
            color.load_state_dict(state["color"])

        if source is None:
            apply()
        else:
            restore(source, apply)
        return cls(cfg, prompts, dmtet.to(device).eval(), color.to(device).eval(), device)

    def copy(self) -> "TrainedSet":
        """An independent copy (new modules, cloned parameters): training it leaves this one as is.
        Rebuilt from state dicts rather than deep-copied, which CUDA-extension modules may refuse."""
        state = {"dmtet": {k: v.detach().clone() for k, v in self.dmtet.state_dict().items()},
                 "color": {k: v.detach().clone() for k, v in self.color.state_dict().items()}}
        return self.from_state(self.cfg, self.prompts, state, self.device)
