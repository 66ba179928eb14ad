"""docs/blender_still.py: the README pictures are real Blender renders of the exported GLBs."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image

from tests.test_export_fbx import needs_blender, standing_box_glb

SCRIPT = Path(__file__).resolve().parents[1] / "docs" / "blender_still.py"


def _still_main():
    spec = importlib.util.spec_from_file_location("blender_still", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@needs_blender
def test_glbs_are_rendered_left_to_right_in_their_colours(tmp_path) -> None:
    red, blue = tmp_path / "red.glb", tmp_path / "blue.glb"
    red.write_bytes(standing_box_glb((0.8, 0.05, 0.05)))
    blue.write_bytes(standing_box_glb((0.05, 0.05, 0.8)))
    out = tmp_path / "pics" / "set.png"
    assert _still_main()([str(red), str(blue), "--out", str(out), "--width", "96", "--height", "48",
                          "--samples", "4", "--azimuth", "0"]) == 0
    img = np.asarray(Image.open(out).convert("RGB"), np.float32) / 255
    assert img.shape == (48, 96, 3)
    red_cols = np.nonzero(img[..., 0] - img[..., 2] > 0.3)[1]
    blue_cols = np.nonzero(img[..., 2] - img[..., 0] > 0.3)[1]
    # Each box shows as a patch of its colour, in the order given (a stray path-traced pixel of
    # colour bounced onto the floor may land in the other half: shares, not absolutes).
    assert len(red_cols) > 20 and len(blue_cols) > 20
    assert (red_cols < 48).mean() > 0.95 and (blue_cols >= 48).mean() > 0.95


def test_missing_glb_is_one_line_and_exit_2(tmp_path, capsys) -> None:
    assert _still_main()([str(tmp_path / "nope.glb"), "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no such GLB") and "\n" not in err
