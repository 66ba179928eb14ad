"""MVDream, the multi-view prior of A3D's reference setup, on diffusers' UNet (see docs/mvdream.md).

Typical use::

    comps = load_components("mvdream-sd2.1", device="cuda")   # or a .pt checkpoint, a port folder
    emb = encode_prompts(comps, prompts, negatives, None)        # no view prompts: cameras say the view
    sds = MVDreamSDS(comps, emb, SDSConfig(resolution=256, guidance_scale=50))
    out = sds(images, u, progress, views=sds.camera_views(cams.elevation, cams.azimuth))

``guidance.load_components`` routes multi-view models here (``multiview_source``), and
``train.pipeline.build_guides`` picks :class:`MVDreamSDS` when the loaded UNet is multi-view.
"""

from a3d_mesh.guidance.mvdream.cameras import mvdream_camera_from_angles, mvdream_camera_from_view, mvdream_cameras
from a3d_mesh.guidance.mvdream.convert import (MVDreamKindError, MVDreamWeightsError, diffusers_config, ldm_key_map,
                                               load_ldm_weights, load_single_file_unet, to_ldm_state_dict)
from a3d_mesh.guidance.mvdream.loader import (MVDREAM_PRIOR, TINY_MULTIVIEW, load_multiview_components,
                                              multiview_source)
from a3d_mesh.guidance.mvdream.sds import MVDreamSDS, check_multiview_cameras, rescale_x0
from a3d_mesh.guidance.mvdream.tiny import build_tiny_multiview_pipeline, tiny_multiview_unet
from a3d_mesh.guidance.mvdream.unet import (MultiViewAttnProcessor, MultiViewUNet2DConditionModel, is_multiview_unet,
                                            set_multiview_attention)

__all__ = [
    "MVDREAM_PRIOR", "MVDreamKindError", "MVDreamSDS", "MVDreamWeightsError", "MultiViewAttnProcessor",
    "MultiViewUNet2DConditionModel", "TINY_MULTIVIEW", "build_tiny_multiview_pipeline", "check_multiview_cameras", "diffusers_config",
    "is_multiview_unet", "ldm_key_map", "load_ldm_weights", "load_multiview_components", "load_single_file_unet",
    "multiview_source", "mvdream_camera_from_angles", "mvdream_camera_from_view", "mvdream_cameras", "rescale_x0",
    "set_multiview_attention", "tiny_multiview_unet", "to_ldm_state_dict",
]
