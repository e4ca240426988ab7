"""A small HTTP/1.1 load generator: N keep-alive connections, each sending one pre-serialised
request after another for a bounded time (closed loop), on raw ``asyncio.open_connection``.

    python -m bench.loadgen --url http://127.0.0.1:8000/v1/brains/bench/predict --body-file body.json \\
        --concurrency 16 --duration 5 --warmup 0.5

prints one JSON object on stdout: ``requests`` (responses that arrived in the ``--duration`` window
after the warm-up, whenever they were sent), ``seconds``,
``rps``, ``p50_ms``/``p90_ms``/``p99_ms``/``max_ms`` latency, ``errors`` (a status other than
``--expect``, or a broken connection; a broken connection is reopened) and ``statuses``.

``bench.serve`` runs it as a separate process so that the client's CPU is not the server's. It
imports nothing beyond the standard library (and uvloop when installed), so it starts in well
under a second; ``run_load`` is the same thing as a function.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit


@dataclass
class LoadResult:
    concurrency: int
    requests: int = 0
    seconds: float = 0.0
    rps: float = 0.0
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    errors: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    error_sample: str | None = None


def build_request(host: str, port: int, path: str, body: bytes | None, *, method: str = "POST",
                  content_type: str = "application/json") -> bytes:
    """The bytes of one keep-alive request, serialised once and sent as they are every time."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: keep-alive",
             "Accept: application/json"]
    if body is not None:
        lines += [f"Content-Type: {content_type}", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One response: ``(status, body)``; Content-Length or chunked bodies."""
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = head[:-4].decode("latin-1").split("\r\n")
    status = int(status_line.split(" ", 2)[1])
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        return status, await reader.readexactly(int(headers["content-length"]))
    if headers.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")  # no trailers expected: the final CRLF
                return status, b"".join(chunks)
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
    return status, b""  # e.g. 204


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an ascending list (``q`` in [0, 100])."""
    if not sorted_values:
        return None
    rank = max(1, round(q / 100 * len(sorted_values) + 0.5 - 1e-9))
    return sorted_values[min(rank, len(sorted_values)) - 1]


async def _connection(host: str, port: int, request: bytes, *, expect: int, warm_until: float, stop_at: float,
                      latencies: list[float], result: LoadResult) -> None:
    reader = writer = None
    while time.perf_counter() < stop_at:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            started = time.perf_counter()
            writer.write(request)
            status, body = await read_response(reader)
            done = time.perf_counter()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, IndexError) as exc:
            if time.perf_counter() >= warm_until:
                result.errors += 1
                result.error_sample = result.error_sample or f"{type(exc).__name__}: {exc}"
            if writer is not None:
                writer.close()
            reader = writer = None
            await asyncio.sleep(0.01)
            continue
        if done < warm_until:
            continue  # throughput and latency: the responses that arrive inside the window
        if done > stop_at:
            break
        latencies.append(done - started)
        result.statuses[str(status)] = result.statuses.get(str(status), 0) + 1
        if status != expect:
            result.errors += 1
            result.error_sample = result.error_sample or f"{status}: {body[:300].decode('utf-8', 'replace')}"
    if writer is not None:
        writer.close()


async def _run(url: str, request: bytes, *, concurrency: int, duration: float, warmup: float, expect: int) -> LoadResult:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    result = LoadResult(concurrency=concurrency)
    latencies: list[float] = []
    warm_until = time.perf_counter() + warmup
    stop_at = warm_until + duration
    await asyncio.gather(*(
        _connection(host, port, request, expect=expect, warm_until=warm_until, stop_at=stop_at,
                    latencies=latencies, result=result)
        for _ in range(concurrency)
    ))
    latencies.sort()
    result.requests = len(latencies)
    result.seconds = duration
    result.rps = len(latencies) / duration
    for name, q in (("p50_ms", 50), ("p90_ms", 90), ("p99_ms", 99), ("max_ms", 100)):
        value = percentile(latencies, q)
        setattr(result, name, None if value is None else round(1000 * value, 3))
    return result


def run_load(url: str, body: bytes | None, *, concurrency: int = 16, duration: float = 5.0, warmup: float = 0.5,
             method: str = "POST", expect: int = 200) -> LoadResult:
    """Closed-loop load on ``url`` (its path and query are the request's) from this process."""
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    request = build_request(parts.hostname or "127.0.0.1", parts.port or 80, path, body, method=method)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        return asyncio.run(_run(url, request, concurrency=concurrency, duration=duration, warmup=warmup, expect=expect))
    return uvloop.run(_run(url, request, concurrency=concurrency, duration=duration, warmup=warmup, expect=expect))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True, help="http://host:port/path?query")
    p.add_argument("--body-file", default=None, help="the request body, sent as it is (none: no body)")
    p.add_argument("--method", default="POST")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--duration", type=float, default=5.0, help="seconds measured, after the warm-up")
    p.add_argument("--warmup", type=float, default=0.5)
    p.add_argument("--expect", type=int, default=200, help="the status that is not an error")
    args = p.parse_args(argv)
    body = Path(args.body_file).read_bytes() if args.body_file else None
    result = run_load(args.url, body, concurrency=args.concurrency, duration=args.duration, warmup=args.warmup,
                      method=args.method, expect=args.expect)
    json.dump(asdict(result), sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
