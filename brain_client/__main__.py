"""``python -m brain_client ...``: the client's commands (``brain-client``) without the script."""

from brain_client.cli import app

app()
