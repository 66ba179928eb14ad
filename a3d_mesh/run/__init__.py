"""The run folder and everything after training: reading a trained set, previews, exports, the
manifest. One owner: training writes the folder's inputs and models through here, and ``run``,
``edit``, ``export`` and ``hybrid`` all finish through :func:`finish_run`.

Public API:
- :class:`TrainedSet`: the set's two models (saved with their own configs) plus its config and prompts.
- :func:`finish_run`, :func:`export_run`, :func:`add_hybrids`: previews + exports + manifest, atomically.
- :class:`HybridAsset`, :func:`hybrid_assets`: hybrids of a set (fine-tuned ones come from training).
- :mod:`a3d_mesh.run.folder`: the layout and its records (config, prompts, edit record, input).
"""

from .finish import (HybridAsset, STAGING_PREFIX, add_hybrids, export_run, export_set, finish_run, guidance_model,
                     hybrid_assets, render_views, write_previews)
from .folder import prepare_run_dir, read_edit_info, read_run
from .manifest import read_manifest, write_manifest
from .trained import TrainedSet, color_field, dmtet_field, model_configs, resolve_device, save_models

__all__ = [
    "HybridAsset", "STAGING_PREFIX", "TrainedSet", "add_hybrids", "color_field", "dmtet_field", "export_run",
    "export_set", "finish_run", "guidance_model", "hybrid_assets", "model_configs", "prepare_run_dir",
    "read_edit_info", "read_manifest", "read_run", "render_views", "resolve_device", "save_models",
    "write_manifest", "write_previews",
]
