"""HTML of the run page and the batch page: self-contained (inline style and script, local files
only), every manifest string escaped (:func:`html.escape` in markup, :func:`safe_json` in script).

A Content-Security-Policy allows only the page's own inline script (by hash), the copied viewer
and the file:// sidecars, so even markup that escaped by mistake could not run a script.
"""

from __future__ import annotations

import base64
import hashlib
import math
from html import escape
from importlib import resources
from typing import Any
from urllib.parse import quote

from a3d_mesh.gallery.runinfo import AssetView, FileLink, RunView
from a3d_mesh.gallery.viewer import how_to, safe_json

FOV_DEG = 30.0  # one field of view for every viewer: equal framing means equal scale
ORBIT = (30.0, 75.0)  # theta (around +Y, from +Z) and phi (from +Y), degrees: a three-quarter view
TURN_RAD_PER_S = 2 * math.pi / 24  # one turn in 24 s


def _static(name: str) -> str:
    return resources.files("a3d_mesh.gallery").joinpath("static", name).read_text(encoding="utf-8")


def e(text: object) -> str:
    """Markup-escaped text (quotes too, so the result is safe in attribute values)."""
    return escape(str(text), quote=True)


def href(rel: str) -> str:
    """A relative URL for a file path: each segment percent-encoded (a name with '#', '?', '"' or a
    space still links to that file), then escaped for the attribute."""
    return e("/".join(quote(part) for part in rel.split("/")))


def _csp(script: str, external_scripts: bool) -> str:
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    # 'wasm-unsafe-eval' allows WebAssembly only (the viewer compiles some), not JS eval.
    sources = f"'sha256-{digest}'" + (" 'self' file: 'wasm-unsafe-eval'" if external_scripts else "")
    return ("default-src 'none'; "
            f"script-src {sources}; style-src 'self' 'unsafe-inline'; img-src 'self' file: data: blob:; "
            "connect-src 'self' file: data: blob:; worker-src blob:; base-uri 'none'; form-action 'none'")


def _document(title: str, body: str, data: dict[str, Any] | None, viewer_href: str | None,
              body_class: str = "") -> str:
    """The page around ``body``: head with style and policy, the viewer script, the data block
    (JSON, escaped for a script element) and the page script."""
    script = _static("page.js") if data is not None else ""
    head_script = f'<script src="{href(viewer_href)}"></script>\n' if viewer_href else ""
    data_block = (f'<script type="application/json" id="a3d-data">{safe_json(data)}</script>\n'
                  f"<script>{script}</script>\n") if data is not None else ""
    policy = _csp(script, data is not None or viewer_href is not None)
    return (
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f'<meta http-equiv="Content-Security-Policy" content="{e(policy)}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{e(title)}</title>\n<style>\n{_static('page.css')}</style>\n{head_script}</head>\n"
        f'<body class="{e(body_class)}">\n{body}\n{data_block}</body>\n</html>\n'
    )


def camera(view: RunView) -> dict[str, float]:
    """One framing for every viewer: the bounding sphere of all GLBs' boxes (they share the set's
    frame and ground), seen with :data:`FOV_DEG` from a distance that fits it."""
    boxes = [a.bbox for a in view.assets if a.bbox is not None and a.glb is not None and a.glb.exists]
    if boxes:
        lo = [min(b[0][k] for b in boxes) for k in range(3)]
        hi = [max(b[1][k] for b in boxes) for k in range(3)]
    else:  # no readable GLB: the exporter's default frame, one unit tall, standing on y = 0
        lo, hi = [-0.5, 0.0, -0.5], [0.5, 1.0, 0.5]
    centre = [(a + b) / 2 for a, b in zip(lo, hi)]
    radius = max(math.dist(lo, hi) / 2, 1e-6)
    distance = 1.1 * radius / math.sin(math.radians(FOV_DEG) / 2)
    return {"target_x": centre[0], "target_y": centre[1], "target_z": centre[2], "distance_m": distance,
            "theta_deg": ORBIT[0], "phi_deg": ORBIT[1], "fov_deg": FOV_DEG, "turn_rad_per_s": TURN_RAD_PER_S}


def _num(x: float) -> str:
    return f"{x:.6g}"


def _viewer_tag(index: int, asset: AssetView, cam: dict[str, float]) -> str:
    """A ``<model-viewer>`` with the shared framing; ``src`` is set by the page script (served:
    the GLB; from disk: the sidecar's bytes), so loads are counted from the start."""
    d = cam["distance_m"]
    attrs = {
        "data-index": str(index),
        "alt": f"3D view of {asset.name}",
        "camera-controls": "", "disable-pan": "", "interaction-prompt": "none",
        "camera-target": f"{_num(cam['target_x'])}m {_num(cam['target_y'])}m {_num(cam['target_z'])}m",
        "camera-orbit": f"{_num(cam['theta_deg'])}deg {_num(cam['phi_deg'])}deg {_num(d)}m",
        "min-camera-orbit": f"auto 5deg {_num(d * 0.2)}m", "max-camera-orbit": f"auto 175deg {_num(d * 4)}m",
        "field-of-view": f"{_num(cam['fov_deg'])}deg", "min-field-of-view": f"{_num(cam['fov_deg'])}deg",
        "max-field-of-view": f"{_num(cam['fov_deg'])}deg",
        "shadow-intensity": "1", "shadow-softness": "0.6", "exposure": "1", "loading": "eager",
    }
    # An empty progress-bar slot: the default bar lingers over the finished view in some browsers.
    return ("<model-viewer " + " ".join(f'{k}="{e(v)}"' if v else k for k, v in attrs.items())
            + '><div slot="progress-bar"></div></model-viewer>')


def _links(files: list[FileLink]) -> str:
    items = []
    for f in files:
        size = f' <span class="dim">({_size(f.size)})</span>' if f.exists else ' <span class="missing">(missing)</span>'
        items.append(f'<li><a href="{href(f.href)}">{e(f.label)}</a>{size}</li>')
    return f'<ul class="files">{"".join(items)}</ul>' if items else '<p class="dim">no files</p>'


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    return f"{n / 1024:.1f} KB" if n < 1024**2 else f"{n / 1024**2:.1f} MB"


def _counts(a: AssetView) -> str:
    rows = [("faces", a.n_faces), ("vertices", a.n_vertices), ("components", a.components)]
    cells = "".join(f"<tr><td>{k}</td><td>{'?' if v is None else f'{v:,}'}</td></tr>" for k, v in rows)
    if a.ground_offset_m is not None:
        cells += f"<tr><td>ground offset</td><td>{a.ground_offset_m:+.4f} m</td></tr>"
    return f'<table class="counts">{cells}</table>'


def _card(index: int, a: AssetView, cam: dict[str, float], viewer: bool) -> str:
    fallback = (f'<img class="fallback" src="{href(a.turnaround.href)}" alt="turnaround of {e(a.name)}">'
                if a.turnaround else "")
    has_glb = a.glb is not None and a.glb.exists
    stage_class = "stage" if viewer and has_glb else "stage still"
    stage = f'<div class="{stage_class}">{_viewer_tag(index, a, cam) if viewer and has_glb else ""}{fallback}</div>'
    kind = f'<span class="badge {e(a.kind)}">{e(a.kind)}</span>'
    lines = [f"<h3>{e(a.name)} {kind}</h3>"]
    if a.prompt is not None:
        lines.append(f'<p class="prompt">{e(a.prompt)}</p>')
    if a.hybrid_spec is not None:
        lines.append(f"<p>spec <code>{e(a.hybrid_spec)}</code></p>")
    if a.hybrid_parts:
        lines.append(f'<p class="dim">{e(", ".join(a.hybrid_parts))}</p>')
    if a.finetune_steps:
        lines.append(f'<p class="dim">fine-tuned {a.finetune_steps} steps</p>')
    if a.code is not None:
        lines.append(f"<p>code <code>[{e(', '.join(f'{c:.3g}' for c in a.code))}]</code></p>")
    if not has_glb:
        lines.append('<p class="dim">no GLB exported: <code>a3d-mesh export RUN_DIR --format glb</code> adds one</p>')
    lines.append(_counts(a))
    for fmt, why in a.failed.items():
        lines.append(f'<p class="missing">{e(fmt)} failed: {e(why)}</p>')
    lines.append(_links(a.files))
    return f'<article class="card" id="asset-{index}">{stage}<div class="info">{"".join(lines)}</div></article>'


def render_run(view: RunView, viewer_href: str | None, sidecars: dict[str, str]) -> str:
    """The run page (see :func:`a3d_mesh.gallery.write_index`). ``viewer_href``: the copied viewer
    script, or None for a page of images with the line that says how to get the 3D view;
    ``sidecars``: asset name -> sidecar script for the page opened from disk."""
    cam = camera(view)
    viewer = viewer_href is not None
    meta = " &middot; ".join(e(x) for x in (f"{len(view.assets)} assets ({len(view.hybrids)} hybrid)",
                                               view.created, f"guidance {view.guidance_model}",
                                               f"a3d-mesh {view.version}") if x)
    parts = [f"<header><h1>{e(view.title)}</h1><p class=\"meta\">{meta}</p>"]
    if view.edit is not None:
        parts.append(f'<p class="meta">edit of <code>{e(view.edit.get("input", "an input mesh"))}</code></p>')
    parts.append(f'<p id="viewer-howto" class="notice"{"" if not viewer else " hidden"}>{e(how_to())}</p>')
    if viewer:
        parts.append('<p id="viewer-status" class="dim">3D: loading&hellip;</p>'
                     '<div class="controls"><label><input type="checkbox" id="turn" checked> turn</label>'
                     '<button type="button" id="reset-view">reset view</button>'
                     '<span class="dim">drag any model: all follow (one camera, true relative sizes)</span></div>')
    parts.append("</header>")
    parts.append('<h2>Set and hybrids</h2><section class="grid">'
                 + "".join(_card(i, a, cam, viewer) for i, a in enumerate(view.assets)) + "</section>")
    if view.transitions:
        gifs = "".join(f'<figure><img src="{href(f.href)}" alt="{e(label)}">'
                       f"<figcaption>{e(label)}</figcaption></figure>" for label, f in view.transitions)
        parts.append(f'<h2>Transitions</h2><section class="gifs">{gifs}</section>')
    strips = [(a.name, a.turnaround) for a in view.assets if a.turnaround is not None]
    if view.set_image is not None:
        strips.insert(0, ("the set", view.set_image))
    strips += [(f.label, f) for f in view.other_previews]
    if strips:
        figs = "".join(f'<figure class="strip"><img src="{href(f.href)}" alt="{e(name)}" loading="lazy">'
                       f"<figcaption>{e(name)}</figcaption></figure>" for name, f in strips)
        parts.append(f"<h2>Turnarounds</h2><section>{figs}</section>")
    exported = [f for a in view.assets for f in a.files]
    parts.append(f"<h2>Files</h2><section><h3>exported</h3>{_links(exported)}"
                 f"<h3>run</h3>{_links(view.run_files)}</section>")
    data = {
        "camera": cam,
        "models": [{"name": a.name, "src": _url(a.glb.href) if a.glb else None, "sidecar": sidecars.get(a.name)}
                   for a in view.assets],
    }
    return _document(f"{view.title} - a3d-mesh", "\n".join(parts), data, viewer_href)


def _url(rel: str) -> str:
    return "/".join(quote(part) for part in rel.split("/"))


def render_batch(title: str, sets: list[tuple[str, RunView | None, str | None]]) -> str:
    """The batch page: one card per set (``(folder name, its view or None when unreadable, the
    reason)``) with its overview image, prompts and a link to its own page."""
    cards = []
    for name, view, why in sets:
        link = f"{name}/index.html"
        if view is None:
            cards.append(f'<article class="card"><div class="info"><h3>{e(name)}</h3>'
                         f'<p class="missing">{e(why or "unreadable")}</p></div></article>')
            continue
        thumb = view.set_image or next((a.turnaround for a in view.assets if a.turnaround), None)
        img = (f'<a href="{href(link)}"><img src="{href(name + "/" + thumb.href)}" alt="{e(name)}" loading="lazy"></a>'
               if thumb else "")
        prompts = "".join(f"<li><b>{e(a.name)}</b>: {e(a.prompt or a.hybrid_spec or '')}</li>" for a in view.assets)
        counts = f"{len(view.assets)} assets ({len(view.hybrids)} hybrid)"
        cards.append(f'<article class="card">{img}<div class="info"><h3><a href="{href(link)}">{e(name)}</a></h3>'
                     f'<p class="meta">{counts} &middot; {e(view.created)}</p>'
                     f'<ul class="files">{prompts}</ul></div></article>')
    body = (f"<header><h1>{e(title)}</h1><p class=\"meta\">{len(sets)} sets</p></header>"
            f'<section class="grid sets">{"".join(cards)}</section>')
    return _document(f"{title} - a3d-mesh batch", body, None, None)
