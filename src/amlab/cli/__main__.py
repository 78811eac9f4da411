"""``python -m amlab.cli``: the ``amlab`` command."""

from amlab.cli import app

app()
