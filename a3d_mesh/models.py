"""Models saved and loaded with their own config, as diffusers models are.

A model class that mixes in :class:`ConfigModel` records the arguments it was built with
(:meth:`ConfigModel.register_config`); :meth:`save` writes them as ``config.json`` beside the
weights (``model.safetensors``), and :meth:`load` rebuilds the module from that JSON alone and loads
the weights. Nothing in a saved folder is executed: the config is JSON, the weights safetensors.

Runtime choices that do not change the weights (the hash-grid ``backend``, the init ``seed``) are
not part of a config: a model saved on a GPU with tiny-cuda-nn loads on a CPU, and the other way.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch

from a3d_mesh.atomic import atomic_write_bytes, atomic_write_text
from a3d_mesh.errors import CheckpointError

M = TypeVar("M", bound="ConfigModel")

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
RUNTIME_ARGS = ("backend", "seed")  # how a model runs or starts, not what it is


class ConfigModel:
    """Mixin for ``torch.nn.Module`` classes rebuilt from a JSON config.

    Subclasses call ``self.register_config(**kwargs)`` in ``__init__`` with their architecture
    arguments (plain JSON values; a dataclass such as a hash-grid config is stored as its dict and
    rebuilt on load through ``config_types``).
    """

    config: dict[str, Any]
    config_types: ClassVar[dict[str, type]] = {}  # argument name -> dataclass rebuilt from its JSON dict

    def register_config(self, **kwargs: Any) -> None:
        self.config = {k: (dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v)
                       for k, v in kwargs.items() if k not in RUNTIME_ARGS}

    @classmethod
    def from_config(cls: type[M], config: dict[str, Any], **runtime: Any) -> M:
        """A fresh (randomly initialised) model of ``config``; ``runtime``: ``backend``, ``seed``."""
        args = {k: (cls.config_types[k](**v) if k in cls.config_types and isinstance(v, dict) else v)
                for k, v in config.items()}
        return cls(**args, **runtime)  # type: ignore[call-arg]

    def save(self, folder: Path) -> Path:
        """Write ``folder/config.json`` and ``folder/model.safetensors`` (each atomically)."""
        from safetensors.torch import save

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}  # type: ignore[attr-defined]
        atomic_write_bytes(folder / WEIGHTS_NAME, save(state))
        atomic_write_text(folder / CONFIG_NAME, json.dumps({"class": type(self).__name__, **self.config}, indent=2) + "\n")
        return folder

    @classmethod
    def load(cls: type[M], folder: Path, device: torch.device | str = "cpu", **runtime: Any) -> M:
        """The model saved in ``folder`` by :meth:`save`, on ``device``, in eval mode.

        Raises :class:`CheckpointError` (one line) for a missing, damaged or foreign folder.
        """
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        folder = Path(folder)
        for need in (CONFIG_NAME, WEIGHTS_NAME):
            if not (folder / need).is_file():
                raise CheckpointError(f"model folder {folder} has no {need}; re-make the run")
        try:
            config = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            raise CheckpointError(f"{folder / CONFIG_NAME} is not valid JSON; re-make the run") from None
        name = config.pop("class", None) if isinstance(config, dict) else None
        if name != cls.__name__:
            raise CheckpointError(f"{folder} holds a {name or 'unknown'} model, not a {cls.__name__}")
        try:
            with torch.random.fork_rng(devices=[]):  # the init is overwritten: keep the caller's RNG stream
                torch.manual_seed(0)
                model = cls.from_config(config, **runtime)
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{folder / CONFIG_NAME} does not describe a {cls.__name__}: "
                                  f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        try:
            state = load_file(str(folder / WEIGHTS_NAME))
            model.load_state_dict(state)  # type: ignore[attr-defined]
        except (SafetensorError, OSError, RuntimeError, ValueError) as e:
            why = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise CheckpointError(f"{folder / WEIGHTS_NAME} does not fit its config.json ({why}); re-make the run") from None
        return model.to(device).eval()  # type: ignore[attr-defined,no-any-return]
