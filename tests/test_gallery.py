"""The run page (issue 27) on a fabricated run folder: escaping of hostile manifest strings, links
to every exported file, hybrids and counts shown, one shared camera, the page without the viewer
script, file:// sidecars, the batch page, the read-only server and ``a3d-mesh view``'s errors.

The real-browser test on a real tiny run is in test_gallery_browser.py."""

from __future__ import annotations

import base64
import json
import os
import threading
import urllib.error
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image
from typer.testing import CliRunner

from a3d_mesh import gallery
from a3d_mesh.gallery import GalleryError, make_server, url_of, write_batch_index, write_index, write_page
from a3d_mesh.gallery import viewer as viewer_mod
from a3d_mesh_cli.main import app

HOSTILE = '</script><script>alert(1)</script>"><img src=x onerror=alert(2)>&amp;'
HOSTILE_NAME = "x</script><script>alert(3)</script>"
runner = CliRunner()


class Page(HTMLParser):
    """The parts of a page the tests look at: every element with its attributes, scripts' text,
    and the text of elements by class."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self._script: dict[str, str | None] | None = None
        self._buf: list[str] = []
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))
        if tag == "script":
            self._script, self._buf = dict(attrs), []

    def handle_endtag(self, tag: str) -> None:
        if tag == "script" and self._script is not None:
            self.scripts.append((self._script, "".join(self._buf)))
            self._script = None

    def handle_data(self, data: str) -> None:
        (self._buf if self._script is not None else self.text).append(data)

    def all(self, tag: str) -> list[dict[str, str | None]]:
        return [a for t, a in self.elements if t == tag]

    def data(self) -> dict:
        return json.loads(next(text for attrs, text in self.scripts if attrs.get("id") == "a3d-data"))


def box_glb(path: Path, height: float) -> None:
    """A GLB box standing on y = 0 (the exporter's grounded frame), ``height`` tall."""
    mesh = trimesh.creation.box(extents=(0.6, height, 0.4))
    mesh.apply_translation((0, height / 2, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(mesh.export(file_type="glb"))


def image(path: Path, size: tuple[int, int] = (64, 32), gif: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    frames = [Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)) for _ in range(2)]
    if gif:
        frames[0].save(path, save_all=True, append_images=frames[1:])
    else:
        frames[0].save(path)


def asset(name: str, files: dict[str, str], extra: list[str] = (), **info) -> dict:  # noqa: ANN003
    hashed = {rel: "0" * 64 for rel in list(files.values()) + list(extra)}
    return {"name": name, "files": files, "sha256": hashed, "n_vertices": 24, "n_faces": 12, "texture_size": 16,
            "cleanup": {"components": {"before": 2, "after": 1}}, "ground_offset_m": -0.0125, **info}


def make_run(run: Path, export_dir: str = "export") -> Path:
    """A finished run folder as ``run`` leaves it: dog (obj too), a cat with a hostile prompt, a
    hybrid, previews, transitions, a manifest."""
    exp = run / export_dir if export_dir else run
    box_glb(exp / "dog.glb", 1.0)
    box_glb(exp / "cat.glb", 0.5)
    box_glb(exp / "mix.glb", 0.8)
    for rel in ("dog.obj", "dog.mtl", "dog_basecolor.png"):
        (exp / rel).write_text("x")
    for name in ("dog", "cat", "mix", "set"):
        image(run / "previews" / f"{name}.png")
    image(run / "previews" / "transition_dog_cat.gif", gif=True)
    (run / "config.yaml").write_text("seed: 0\n")
    (run / "prompts.txt").write_text("dog: a dog\n")
    manifest = {
        "a3d_mesh_version": "0.1.0", "created": "2026-01-01T00:00:00+00:00", "guidance_model": "tiny",
        "prompts": [{"name": "dog", "prompt": "a dog"}, {"name": "cat", "prompt": HOSTILE}],
        "assets": [
            asset("dog", {"glb": "dog.glb", "obj": "dog.obj"}, ["dog.mtl", "dog_basecolor.png"], kind="object",
                  prompt="a dog", code=[1.0, 0.0]),
            asset("cat", {"glb": "cat.glb"}, kind="object", prompt=HOSTILE, code=[0.0, 1.0]),
            asset("mix", {"glb": "mix.glb"}, kind="hybrid", components=2, finetune={"steps": 5},
                  hybrid={"name": "mix", "spec": "mix=dog@x>0,cat", "blend": 0.1,
                          "parts": [{"source": 0, "name": "dog", "region": "x>0"},
                                    {"source": 1, "name": "cat", "region": "rest"}]}),
        ],
        "previews": ["previews/dog.png", "previews/cat.png", "previews/mix.png", "previews/set.png",
                     "previews/transition_dog_cat.gif"],
    }
    (run / "manifest.json").write_text(json.dumps(manifest))
    return run


@pytest.fixture()
def fake_viewer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in viewer script where ``$A3D_MESH_MODEL_VIEWER`` points (its content is never run)."""
    pkg = tmp_path / "nm" / "@google" / "model-viewer"
    script = pkg / "dist" / "model-viewer-umd.min.js"
    script.parent.mkdir(parents=True)
    script.write_text("/* model-viewer stand-in */\n")
    (pkg / "LICENSE").write_text("Apache-2.0\n")
    monkeypatch.setenv(viewer_mod.ENV_VAR, str(tmp_path / "nm"))
    return script


@pytest.fixture()
def no_viewer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv(viewer_mod.ENV_VAR, str(tmp_path / "empty"))


@pytest.fixture()
def run(tmp_path: Path) -> Path:
    return make_run(tmp_path / "run")


def test_hostile_strings_are_escaped(run: Path, fake_viewer: Path) -> None:
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["assets"][2]["name"] = HOSTILE_NAME  # a hand-edited manifest: names are not checked here
    (run / "manifest.json").write_text(json.dumps(manifest))
    text = write_index(run).read_text(encoding="utf-8")
    assert "<script>alert" not in text and "<img src=x" not in text
    page = Page(text)
    # Exactly the page's own scripts: the viewer, the data block and the page script.
    assert [a.get("src") or a.get("type") or "inline" for a, _ in page.scripts] == \
        ["_viewer/model-viewer.min.js", "application/json", "inline"]
    assert not any(tag == "img" and a.get("onerror") is not None for tag, a in page.elements)
    assert HOSTILE in "".join(page.text)  # shown, as text
    assert page.data()["models"][2]["name"] == HOSTILE_NAME  # round-trips through the JSON block
    block = next(text for attrs, text in page.scripts if attrs.get("id") == "a3d-data")
    assert not set("<>&") & set(block)  # none of them can end the element or start a comment
    csp = next(a["content"] for a in page.all("meta") if a.get("http-equiv") == "Content-Security-Policy")
    assert "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]


def test_links_to_every_exported_file(run: Path, fake_viewer: Path) -> None:
    page = Page(write_index(run).read_text(encoding="utf-8"))
    hrefs = {a["href"] for a in page.all("a")}
    for rec in json.loads((run / "manifest.json").read_text())["assets"]:
        for rel in set(rec["files"].values()) | set(rec["sha256"]):
            assert f"export/{rel}" in hrefs, rel
            assert (run / "export" / rel).is_file()
    assert {"manifest.json", "config.yaml", "prompts.txt"} <= hrefs


def test_export_out_folder_links_beside_the_manifest(tmp_path: Path, fake_viewer: Path) -> None:
    folder = make_run(tmp_path / "out", export_dir="")  # a3d-mesh export --out: files beside the manifest
    page = Page(write_index(folder).read_text(encoding="utf-8"))
    hrefs = {a["href"] for a in page.all("a")}
    assert {"dog.glb", "dog.mtl", "cat.glb", "mix.glb"} <= hrefs and "export/dog.glb" not in hrefs
    assert [m["src"] for m in page.data()["models"]] == ["dog.glb", "cat.glb", "mix.glb"]


def test_assets_and_hybrids_with_prompt_code_counts(run: Path, fake_viewer: Path) -> None:
    text = write_index(run).read_text(encoding="utf-8")
    page = Page(text)
    viewers = page.all("model-viewer")
    assert [v["data-index"] for v in viewers] == ["0", "1", "2"]  # the hybrid has its viewer too
    assert [m["src"] for m in page.data()["models"]] == ["export/dog.glb", "export/cat.glb", "export/mix.glb"]
    shown = " ".join(" ".join(page.text).split())
    for needle in ("mix hybrid", "mix=dog@x>0,cat", "dog @ x>0, cat @ rest", "fine-tuned 5 steps",
                   "code [1, 0]", "faces 12", "vertices 24", "components 1", "components 2", "-0.0125 m"):
        assert needle in shown, needle
    gifs = [a for a in page.all("img") if a.get("src", "").endswith(".gif")]
    assert [g["src"] for g in gifs] == ["previews/transition_dog_cat.gif"] and gifs[0]["alt"] == "dog \u2192 cat"
    turnarounds = {a["src"] for a in page.all("img")}
    assert {"previews/dog.png", "previews/cat.png", "previews/mix.png", "previews/set.png"} <= turnarounds


def test_one_camera_for_all_viewers(run: Path, fake_viewer: Path) -> None:
    viewers = Page(write_index(run).read_text(encoding="utf-8")).all("model-viewer")
    keys = ("camera-target", "camera-orbit", "field-of-view", "min-camera-orbit", "max-camera-orbit")
    assert len({tuple(v[k] for k in keys) for v in viewers}) == 1  # same framing: true relative sizes
    # The union of the boxes (dog 1.0 tall, cat 0.5, mix 0.8; all on y = 0) is centred at y = 0.5.
    x, y, z = (float(s.removesuffix("m")) for s in viewers[0]["camera-target"].split())
    assert (x, z) == pytest.approx((0.0, 0.0), abs=1e-6) and y == pytest.approx(0.5, abs=1e-6)


def test_viewer_copied_and_sidecars_hold_the_glbs(run: Path, fake_viewer: Path) -> None:
    write_index(run)
    assert (run / "_viewer" / "model-viewer.min.js").read_bytes() == fake_viewer.read_bytes()
    assert (run / "_viewer" / "LICENSE-model-viewer.txt").is_file()
    models = Page((run / "index.html").read_text(encoding="utf-8")).data()["models"]
    for m in models:
        js = (run / m["sidecar"]).read_text()
        key, b64 = json.loads("[" + js.removeprefix("window.a3dModel(").rstrip().removesuffix(");") + "]")
        assert key == m["name"] and base64.b64decode(b64) == (run / m["src"]).read_bytes()


def test_sidecars_dropped_over_the_limit(run: Path, fake_viewer: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_index(run)
    assert list((run / "_viewer" / "models").glob("*.js"))
    monkeypatch.setattr(viewer_mod, "SIDECAR_LIMIT", 10)
    models = Page(write_index(run).read_text(encoding="utf-8")).data()["models"]
    assert all(m["sidecar"] is None for m in models)
    assert not list((run / "_viewer" / "models").glob("*.js"))  # no stale mesh left to show


def test_without_viewer_script_images_and_how_to(run: Path, fake_viewer: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_index(run)  # first with a viewer: the rewrite below must also remove the stale copy
    monkeypatch.setenv(viewer_mod.ENV_VAR, str(run / "nowhere"))
    assert gallery.find_viewer_script() is None
    page = Page(write_index(run).read_text(encoding="utf-8"))
    assert not page.all("model-viewer") and not (run / "_viewer").exists()
    howto = next(a for a in page.all("p") if a.get("id") == "viewer-howto")
    assert "hidden" not in howto
    assert "npm install @google/model-viewer" in "".join(page.text) and "install.sh" in "".join(page.text)
    fallbacks = [a["src"] for a in page.all("img") if a.get("class") == "fallback"]
    assert fallbacks == ["previews/dog.png", "previews/cat.png", "previews/mix.png"]
    assert not any(a.get("src") for a, _ in page.scripts)  # self-contained: nothing to fetch


def test_viewer_found_in_project_node_modules(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(viewer_mod.ENV_VAR, raising=False)
    monkeypatch.setattr(viewer_mod, "PROJECT_DIR", tmp_path)
    monkeypatch.chdir(tmp_path)
    assert viewer_mod.find_viewer_script() is None
    script = tmp_path / "node_modules" / "@google" / "model-viewer" / "dist" / "model-viewer-umd.min.js"
    script.parent.mkdir(parents=True)
    script.write_text("//")
    assert viewer_mod.find_viewer_script() == script


def test_rewrite_is_idempotent(run: Path, fake_viewer: Path) -> None:
    first = write_index(run).read_text(encoding="utf-8")
    copied = run / "_viewer" / "model-viewer.min.js"
    stamp = copied.stat().st_mtime_ns
    os.utime(copied, ns=(stamp - 10**9, stamp - 10**9))
    assert write_index(run).read_text(encoding="utf-8") == first
    assert copied.stat().st_mtime_ns == stamp - 10**9  # unchanged files are not rewritten


def test_file_names_are_url_encoded(run: Path, fake_viewer: Path) -> None:
    manifest = json.loads((run / "manifest.json").read_text())
    odd = 'dog "#1?.png'
    (run / "export" / odd).write_text("x")
    manifest["assets"][0]["sha256"][odd] = "0" * 64
    (run / "manifest.json").write_text(json.dumps(manifest))
    hrefs = {a["href"] for a in Page(write_index(run).read_text(encoding="utf-8")).all("a")}
    assert "export/dog%20%22%231%3F.png" in hrefs


def test_batch_page(tmp_path: Path, fake_viewer: Path) -> None:
    batch = tmp_path / "batch"
    make_run(batch / "animals")
    make_run(batch / "more")
    (batch / "broken").mkdir()
    (batch / "broken" / "manifest.json").write_text("{not json")
    (batch / "notes").mkdir()  # not a run folder: not listed
    page = Page(write_page(batch).read_text(encoding="utf-8"))
    hrefs = [a["href"] for a in page.all("a")]
    assert "animals/index.html" in hrefs and "more/index.html" in hrefs and "notes/index.html" not in hrefs
    assert {"animals/previews/set.png", "more/previews/set.png"} <= {a["src"] for a in page.all("img")}
    assert (batch / "animals" / "index.html").is_file()  # every link leads somewhere
    assert "not valid JSON" in "".join(page.text)  # a damaged set is named, not fatal
    with pytest.raises(GalleryError):
        write_batch_index(tmp_path / "batch" / "notes")


def test_not_a_run_is_one_line_bad_input(tmp_path: Path) -> None:
    with pytest.raises(GalleryError) as info:
        write_page(tmp_path)
    assert info.value.exit_code == 2 and "\n" not in str(info.value)
    (tmp_path / "manifest.json").write_text("[1, 2")
    with pytest.raises(GalleryError, match="not valid JSON"):
        write_index(tmp_path)


def _get(url: str, method: str = "GET") -> tuple[int, str, bytes]:
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as res:
            return res.status, res.headers.get("Content-Type", ""), res.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), b""


def test_server_read_only_with_mime_types(run: Path, fake_viewer: Path) -> None:
    write_index(run)
    server = make_server(run, port=0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        base = url_of(server, "")
        status, ctype, body = _get(base + "index.html")
        assert status == 200 and ctype.startswith("text/html") and body == (run / "index.html").read_bytes()
        assert _get(base + "export/dog.glb")[1] == "model/gltf-binary"
        assert _get(base + "_viewer/model-viewer.min.js")[1] in ("text/javascript", "application/javascript")
        assert _get(base + "index.html", "POST")[0] == 501 and _get(base + "index.html", "PUT")[0] == 501
        assert _get(base + "../../../etc/passwd")[0] == 404
        with pytest.raises(GalleryError, match="in use"):
            make_server(run, port=server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def one_line(res, code: int, text: str) -> None:  # noqa: ANN001
    lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
    assert res.exit_code == code and len(lines) == 1 and text in lines[0], res.output


def test_cli_view_errors(tmp_path: Path, run: Path) -> None:
    one_line(runner.invoke(app, ["view", str(tmp_path / "none")]), 2, "does not exist")
    (tmp_path / "plain").mkdir()
    one_line(runner.invoke(app, ["view", str(tmp_path / "plain")]), 2, "not a run folder")
    one_line(runner.invoke(app, ["view", str(run), "--no-write"]), 2, "drop --no-write")
    one_line(runner.invoke(app, ["view", str(run), "--port", "70000"]), 2, "0..65535")


def test_cli_view_writes_then_serves(run: Path, fake_viewer: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(gallery, "serve", lambda folder, host, port: calls.append((Path(folder), host, port)))
    res = runner.invoke(app, ["view", str(run), "--port", "8123"])
    assert res.exit_code == 0, res.output
    assert calls == [(run, "127.0.0.1", 8123)] and (run / "index.html").is_file()
    (run / "index.html").write_text("mine")
    assert runner.invoke(app, ["view", str(run), "--no-write"]).exit_code == 0
    assert (run / "index.html").read_text() == "mine"


def test_batch_page_of_given_sets(tmp_path: Path, fake_viewer: Path) -> None:
    batch = tmp_path / "batch"
    make_run(batch / "one" / "deep")
    page = Page(write_batch_index(batch, [batch / "one" / "deep"]).read_text(encoding="utf-8"))
    assert "one/deep/index.html" in {a["href"] for a in page.all("a")}
    assert (batch / "one" / "deep" / "index.html").is_file()


def test_paths_outside_the_run_are_not_read(run: Path, fake_viewer: Path) -> None:
    secret = run.parent / "secret.glb"
    secret.write_bytes((run / "export" / "dog.glb").read_bytes())
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["assets"][0]["files"]["glb"] = "../../secret.glb"
    (run / "manifest.json").write_text(json.dumps(manifest))
    page = Page(write_index(run).read_text(encoding="utf-8"))
    assert page.data()["models"][0]["sidecar"] is None  # its bytes were not copied into the page folder
    assert [v["data-index"] for v in page.all("model-viewer")] == ["1", "2"]
    assert "(missing)" in "".join(page.text)
