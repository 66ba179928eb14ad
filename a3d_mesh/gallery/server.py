"""Serve a run (or batch) folder read-only over HTTP, for ``a3d-mesh view``.

The standard library's file handler, restricted to GET and HEAD (it has no writing methods), with
the MIME types a browser needs for the viewer (``model/gltf-binary`` for .glb, JavaScript for .js:
browsers refuse scripts served as anything else) and no request log (one line per file is noise).
"""

from __future__ import annotations

import errno
import functools
import socket
import sys
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, TextIO

from a3d_mesh.gallery.runinfo import GalleryError

MIME_TYPES = {
    ".glb": "model/gltf-binary",
    ".gltf": "model/gltf+json",
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".json": "application/json",
    ".html": "text/html; charset=utf-8",
    ".css": "text/css",
    ".png": "image/png",
    ".gif": "image/gif",
    ".obj": "model/obj",
    ".mtl": "model/mtl",
    ".usdz": "model/vnd.usdz+zip",
    ".fbx": "application/octet-stream",
    ".yaml": "text/plain; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
}


class ReadOnlyHandler(SimpleHTTPRequestHandler):
    """Files of one folder, GET/HEAD only, with :data:`MIME_TYPES` and without a request log."""

    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, **MIME_TYPES}

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        """Silent: the page is the interface, not the log."""

    def end_headers(self) -> None:
        # Always the current file: a refreshed page must not show a cached old mesh.
        self.send_header("Cache-Control", "no-cache")
        self.send_header("X-Content-Type-Options", "nosniff")
        super().end_headers()


def make_server(folder: Path, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """A bound (not yet serving) server of ``folder``; ``port`` 0 takes a free one (see
    ``server.server_address``). A port in use or a bad host is a :class:`GalleryError`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise GalleryError(f"{folder} is not a folder")
    if not 0 <= port <= 65535:
        raise GalleryError(f"--port must be in 0..65535, got {port}")
    handler = functools.partial(ReadOnlyHandler, directory=str(folder.resolve()))
    try:
        server = ThreadingHTTPServer((host, port), handler)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise GalleryError(f"port {port} is in use on {host}; choose another with --port (0: any free one)") from e
        if e.errno in (errno.EADDRNOTAVAIL, errno.EACCES) or isinstance(e, socket.gaierror):
            raise GalleryError(f"cannot serve on {host}:{port} ({e.strerror or e})") from e
        raise
    server.daemon_threads = True  # a browser's open keep-alive connection must not block the exit
    return server


def url_of(server: ThreadingHTTPServer, page: str = "index.html") -> str:
    """The address a browser opens for ``page`` on ``server``."""
    host, port = server.server_address[:2]
    shown = f"[{host}]" if ":" in str(host) else str(host)
    return f"http://{shown}:{port}/{page}"


def serve(folder: Path, host: str = "127.0.0.1", port: int = 0, out: TextIO | None = None,
          ready: Callable[[ThreadingHTTPServer], None] | None = None) -> None:
    """Serve ``folder`` read-only until Ctrl-C, printing its page's address first; returns normally
    (and closes the socket) on Ctrl-C. ``ready`` is called with the server once it listens."""
    out = out or sys.stdout
    server = make_server(folder, host, port)
    try:
        print(f"Serving {folder} at {url_of(server)} (Ctrl-C stops)", file=out, flush=True)
        if ready is not None:
            ready(server)
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        print("stopped", file=out, flush=True)
    finally:
        server.server_close()
