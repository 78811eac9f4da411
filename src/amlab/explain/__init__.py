"""The browser explainer: serve the built web app, and export the data and test vectors it uses.

The app's source is ``web/`` (Svelte + TypeScript); its build lives in ``static/`` inside this
package, so ``amlab explain`` works after ``pip install`` without node.
"""

from amlab.explain.export import export_app_data, export_test_vectors
from amlab.explain.server import STATIC_DIR, serve

__all__ = ["STATIC_DIR", "export_app_data", "export_test_vectors", "serve"]
