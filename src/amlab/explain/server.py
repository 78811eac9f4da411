"""Serve the built explainer (a static site) on 127.0.0.1.

The app is one page (``index.html``) that fetches files by name (``data/<file>``, the
built ``assets/``), so the server answers files only: a directory URL serves its
``index.html`` where there is one and is 404 otherwise (no listings); a path the file
system cannot name (a null byte, undecodable bytes) is 400. With a ``gallery`` directory,
the URLs under ``data/gallery/`` are answered from it instead of the app's own (the gallery
view's files, :mod:`amlab.explain.gallery`), by the same path rules. Connections queue in a listen
backlog of :data:`LISTEN_BACKLOG`, so hundreds of simultaneous requests (a page load fetches
many files at once) wait their turn instead of being dropped.
"""

from __future__ import annotations

import functools
import sys
import threading
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from amlab.errors import AmlabError, check_positive_int

STATIC_DIR = Path(__file__).parent / "static"
#: connections the kernel queues before the server accepts them (the standard library's 5
#: dropped connections when a page asked for many files at once); capped by somaxconn
LISTEN_BACKLOG = 1024
#: the URL path under which the gallery view reads its gallery
GALLERY_URL = "/data/gallery/"


class _QuietHandler(SimpleHTTPRequestHandler):
    """Static files with the right types for modules and wasm, no per-request log lines."""

    extensions_map = {
        **SimpleHTTPRequestHandler.extensions_map,
        ".js": "text/javascript",
        ".mjs": "text/javascript",
        ".wasm": "application/wasm",
        ".json": "application/json",
    }

    #: the directory answering GALLERY_URL (None: the app's own data/gallery/)
    gallery: str | None = None

    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        pass

    def translate_path(self, path):
        """A URL under GALLERY_URL names a file of ``gallery``: the rest of the path goes
        through the base class's rules (no '..', no absolute parts) with that root."""
        if self.gallery is None or not path.startswith(GALLERY_URL):
            return super().translate_path(path)
        root, self.directory = self.directory, self.gallery
        try:
            return super().translate_path(path[len(GALLERY_URL) - 1 :])
        finally:
            self.directory = root

    def send_head(self):
        try:
            return super().send_head()
        except ValueError:  # open() of a path with a null byte or an unencodable character
            self.send_error(HTTPStatus.BAD_REQUEST, "Invalid path")
            return None

    def list_directory(self, path):
        """No listings: a directory without index.html is not found."""
        self.send_error(HTTPStatus.NOT_FOUND, "File not found")
        return None


class _Server(ThreadingHTTPServer):
    """A threading server with a deep listen backlog that keeps quiet about clients that
    hang up early."""

    request_queue_size = LISTEN_BACKLOG
    daemon_threads = True

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def serve(
    port: int = 8765,
    directory: str | Path | None = None,
    *,
    background: bool = False,
    gallery: str | Path | None = None,
) -> ThreadingHTTPServer:
    """Serve ``directory`` (default: the packaged app) on http://127.0.0.1:``port``; with
    ``gallery`` (a directory of :func:`amlab.explain.gallery.write_gallery_view`'s files), the
    gallery view shows that gallery.

    port 0 picks a free port (read it from ``server.server_address[1]``). With
    ``background`` the server runs in a daemon thread and this returns at once; stop it
    with ``server.shutdown()``. Otherwise the caller runs ``server.serve_forever()``.
    """
    port = check_positive_int(port, "port", allow_zero=True)
    if port > 65535:
        raise AmlabError(f"port must lie in 0..65535; got {port}.")
    root = Path(STATIC_DIR if directory is None else directory)
    if not (root / "index.html").is_file():
        raise AmlabError(
            f"no built explainer in {str(root)!r} (index.html missing); build it with "
            "`make web` (needs node and npm) or reinstall amlab."
        )
    if gallery is not None and not (Path(gallery) / "metadata.parquet").is_file():
        raise AmlabError(
            f"{gallery} holds no metadata.parquet; pass a directory written for the gallery view."
        )
    handler_class = _QuietHandler
    if gallery is not None:
        handler_class = type("_GalleryHandler", (_QuietHandler,), {"gallery": str(gallery)})
    handler = functools.partial(handler_class, directory=str(root))
    try:
        server = _Server(("127.0.0.1", port), handler)
    except OSError as exc:
        raise AmlabError(
            f"cannot listen on 127.0.0.1:{port} ({exc.strerror}); pick another --port "
            "(0 chooses a free one)."
        ) from exc
    if background:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
