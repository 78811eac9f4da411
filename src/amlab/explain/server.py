"""Serve the built explainer (a static site) on 127.0.0.1."""

from __future__ import annotations

import functools
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from amlab.errors import AmlabError, check_positive_int

STATIC_DIR = Path(__file__).parent / "static"


class _QuietHandler(SimpleHTTPRequestHandler):
    """Static files with the right types for modules and wasm, no per-request log lines."""

    extensions_map = {
        **SimpleHTTPRequestHandler.extensions_map,
        ".js": "text/javascript",
        ".mjs": "text/javascript",
        ".wasm": "application/wasm",
        ".json": "application/json",
    }

    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        pass


def serve(
    port: int = 8765, directory: str | Path | None = None, *, background: bool = False
) -> ThreadingHTTPServer:
    """Serve ``directory`` (default: the packaged app) on http://127.0.0.1:``port``.

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
    handler = functools.partial(_QuietHandler, directory=str(root))
    try:
        server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    except OSError as exc:
        raise AmlabError(
            f"cannot listen on 127.0.0.1:{port} ({exc.strerror}); pick another --port "
            "(0 chooses a free one)."
        ) from exc
    if background:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
