"""``python -m brain_cli ...``: the ``brain`` command without its console script."""

from brain_cli.main import app

app()
