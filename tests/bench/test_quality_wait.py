"""bench.quality waits for a service it started on the service's real liveness route, and fails
instead of going on when the service never answers there."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bench import quality
from service.api.health import router


@contextmanager
def server_answering(path: str) -> Iterator[str]:
    """An HTTP server on a free local port that answers 200 on ``path`` and 404 elsewhere."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
            self.send_response(200 if self.path == path else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_the_liveness_route_is_healthz() -> None:
    assert "/healthz" in {route.path for route in router.routes}


def test_waits_for_healthz() -> None:
    with server_answering("/healthz") as url:
        quality.wait_until_healthy(url, timeout=5)


def test_a_service_that_never_answers_healthz_is_an_error() -> None:
    with server_answering("/health") as url, pytest.raises(RuntimeError, match="/healthz"):
        quality.wait_until_healthy(url, timeout=0.5)
