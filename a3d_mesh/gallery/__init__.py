"""A page to look at every run (issue 27): ``RUN_DIR/index.html`` and ``BATCH_DIR/index.html``.

The run page shows each asset and hybrid in an interactive 3D viewer (``<model-viewer>``, copied
from the local npm install beside the page), all on one shared ground and camera so relative sizes
are true, turning together; the transition GIFs, the turnarounds, each asset's prompt, code and
counts from the manifest, and links to every exported file. Without the viewer script the page
shows the images and one line saying how to get the 3D view.

Entry points: :func:`write_index` (a run folder), :func:`write_batch_index` (a folder of run
folders), :func:`write_page` (either), :func:`serve` (``a3d-mesh view``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from a3d_mesh.atomic import atomic_write_text
from a3d_mesh.gallery.page import render_batch, render_run
from a3d_mesh.gallery.runinfo import GalleryError, has_manifest, read_run_view, run_subfolders
from a3d_mesh.gallery.server import make_server, serve, url_of
from a3d_mesh.gallery.viewer import find_viewer_script, install_viewer, remove_viewer, write_sidecars

INDEX = "index.html"

__all__ = ["GalleryError", "INDEX", "check_folder", "find_viewer_script", "is_batch_dir", "has_manifest",
           "make_server", "serve", "url_of", "write_batch_index", "write_index", "write_page"]


def write_index(run_dir: Path) -> Path:
    """Write ``run_dir/index.html`` (atomically) from its ``manifest.json``; returns its path.

    Copies the viewer script into ``run_dir/_viewer/`` when it is installed (see
    :func:`find_viewer_script`), with a file:// sidecar per GLB; without it the page is images
    plus the how-to line, and a stale ``_viewer/`` is removed. Cheap to call again (unchanged
    files are not rewritten): call it whenever the manifest changes.

    Raises:
        GalleryError: no ``manifest.json`` (not a finished run) or a damaged one.
    """
    run_dir = Path(run_dir)
    view = read_run_view(run_dir)
    script = find_viewer_script()
    if script is None:
        remove_viewer(run_dir)
        viewer_href, sidecars = None, {}
    else:
        viewer_href = install_viewer(run_dir, script)
        glbs = [(a.name, a.glb.href) for a in view.assets if a.glb is not None and a.glb.exists]
        sidecars = write_sidecars(run_dir, glbs)
    return atomic_write_text(run_dir / INDEX, render_run(view, viewer_href, sidecars))


def write_batch_index(folder: Path, sets: Sequence[Path] | None = None, write_sets: bool = True) -> Path:
    """Write ``folder/index.html`` listing its run folders, each with a thumbnail and a link to its
    own page; returns its path.

    Args:
        sets: the run folders to list (inside ``folder``); default: every subfolder with a manifest.
        write_sets: also (re)write each set's own ``index.html``, so every link leads somewhere.
            A set whose manifest cannot be read is listed with the reason, not fatal.

    Raises:
        GalleryError: no run folder to list.
    """
    folder = Path(folder)
    runs = [Path(s) for s in sets] if sets is not None else run_subfolders(folder)
    if not runs:
        raise GalleryError(f"{folder} holds no run folders (subfolders with a manifest.json)")
    entries = []
    for run in runs:
        rel = Path(os.path.relpath(run, folder)).as_posix()  # links relative to the batch page
        try:
            if write_sets:
                write_index(run)
            entries.append((rel, read_run_view(run), None))
        except GalleryError as e:
            entries.append((rel, None, str(e)))
    return atomic_write_text(folder / INDEX, render_batch(folder.resolve().name, entries))


def is_batch_dir(folder: Path) -> bool:
    """Whether ``folder`` is a batch: no manifest of its own, run folders inside."""
    return not has_manifest(folder) and bool(run_subfolders(folder))


def write_page(folder: Path) -> Path:
    """The page of ``folder``, whichever kind it is: a run's (:func:`write_index`) or a batch's
    (:func:`write_batch_index`); anything else is a :class:`GalleryError` (exit code 2)."""
    folder = Path(folder)
    if has_manifest(folder):
        return write_index(folder)
    if is_batch_dir(folder):
        return write_batch_index(folder)
    check_folder(folder)
    raise AssertionError("unreachable")


def check_folder(folder: Path) -> None:
    """Refuse, in one line, a folder that is neither a run folder nor a batch of them."""
    folder = Path(folder)
    if not folder.exists():
        raise GalleryError(f"{folder} does not exist")
    if not folder.is_dir():
        raise GalleryError(f"{folder} is not a folder")
    if not has_manifest(folder) and not is_batch_dir(folder):
        raise GalleryError(f"{folder} is not a run folder (no manifest.json) nor a folder of run folders")
