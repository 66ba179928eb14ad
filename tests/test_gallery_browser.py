"""The run page of a real tiny run (issue 27): every file linked, and in headless Chromium, served by
:func:`a3d_mesh.gallery.make_server` and opened from disk, every ``<model-viewer>`` loads (the page
counts its 'load' and 'error' events into ``<body data-models-*>``) with no console error, and the
screenshot is not blank.

Needs Debian's ``chromium`` and the npm ``@google/model-viewer`` (install.sh); without them the
browser test skips, except under ``CI=true`` (.ci/run installs both), where it fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from a3d_mesh.gallery import find_viewer_script, make_server, url_of, write_index
from a3d_mesh_cli.main import app

pytestmark = pytest.mark.slow

# Software WebGL in headless Chromium: ANGLE on SwiftShader (--enable-unsafe-swiftshader is needed
# since Chromium 137 refuses the SwiftShader fallback for WebGL without it). Reduced motion stops
# the page's shared turn: otherwise every virtual frame re-renders every viewer in software and the
# time budget can run out before the models have loaded on a busy machine.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--use-angle=swiftshader",
                  "--enable-unsafe-swiftshader", "--force-prefers-reduced-motion", "--hide-scrollbars",
                  "--no-first-run", "--enable-logging=stderr", "--v=0", "--window-size=1280,900",
                  "--virtual-time-budget=20000"]
BODY_RE = re.compile(r"<body\b[^>]*>")
# WebGL performance notes from SwiftShader are logged as console messages; they are not errors.
HARMLESS = ("GL Driver Message",)


def need(thing: object, why: str) -> None:
    """Skip without ``thing``, or fail under CI=true, where .ci/run installs it."""
    if thing:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{why} (CI installs it: see .ci/run and install.sh)")
    pytest.skip(why)


def chromium() -> str | None:
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real run of the tiny preset, as short as still leaves surfaces: two objects and a hybrid."""
    base = tmp_path_factory.mktemp("gallery")
    prompts = base / "pets.txt"
    prompts.write_text("dog: a dog\ncat: a cat\n")
    out = base / "pets"
    res = CliRunner().invoke(app, ["run", str(prompts), "--preset", "tiny", "--out", str(out), "-q",
                                   "--hybrid", "mix=dog@x>0,cat", "coarse.steps=4", "refine.steps=2",
                                   "refine.init_steps=40", "preview.views=2", "preview.sweep_frames=3"])
    assert res.exit_code == 0, res.output
    return out


def test_tiny_run_page_links_every_file(tiny_run: Path) -> None:
    html = write_index(tiny_run).read_text(encoding="utf-8")
    manifest = json.loads((tiny_run / "manifest.json").read_text())
    assert [a["name"] for a in manifest["assets"]] == ["dog", "cat", "mix"]
    for rec in manifest["assets"]:
        for rel in set(rec["files"].values()) | set(rec["sha256"]):
            assert f'href="export/{rel}"' in html and (tiny_run / "export" / rel).is_file()
    for rel in manifest["previews"]:
        assert f'src="{rel}"' in html and (tiny_run / rel).is_file()


def run_chromium(exe: str, url: str, shot: Path, profile: Path) -> tuple[dict[str, str], list[str]]:
    """Open ``url``; return the body's attributes after the time budget and the console lines."""
    proc = subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={shot}",
                           "--dump-dom", url], capture_output=True, text=True, timeout=90)
    body = BODY_RE.search(proc.stdout)
    assert body, f"no page from Chromium (rc {proc.returncode}): {proc.stderr[-2000:]}"
    attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', body.group(0)))
    console = [ln for ln in proc.stderr.splitlines() if ":CONSOLE" in ln and not any(h in ln for h in HARMLESS)]
    return attrs, console


@pytest.fixture(scope="module")
def browser() -> str:
    """Chromium and the viewer script, checked before the (slow) tiny run is made."""
    need(chromium(), "chromium is not installed (apt-get install chromium)")
    need(find_viewer_script(), "@google/model-viewer is not installed (npm install @google/model-viewer; install.sh)")
    return str(chromium())


def test_models_load_in_headless_chromium(browser: str, tiny_run: Path, tmp_path: Path) -> None:
    write_index(tiny_run)
    n = len(json.loads((tiny_run / "manifest.json").read_text())["assets"])
    server = make_server(tiny_run, port=0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        for where, url in (("served", url_of(server)), ("from disk", (tiny_run / "index.html").as_uri())):
            shot = tmp_path / f"{where.replace(' ', '_')}.png"
            attrs, console = run_chromium(browser, url, shot, tmp_path / "profile")
            counts = {k: attrs.get(f"data-models-{k}") for k in ("total", "loaded", "failed")}
            assert counts == {"total": str(n), "loaded": str(n), "failed": "0"}, (where, counts, console)
            assert not [ln for ln in console if re.search(r"error|uncaught|refused|violat|fail", ln, re.I)], console
            pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
            assert pixels.shape == (900, 1280) and pixels.std() > 10, (where, pixels.std())
            # The middle of the first viewer (a pale background when empty) shows a shaded model.
            assert pixels[300:480, 60:280].min() < 160, (where, pixels[300:480, 60:280].min())
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
