"""Embedded jobs in a job process of their own, so that training never holds the API's interpreter.

With ``jobs="child"`` (the embedded default) the API process starts ``python -m
service.job_process`` and supervises it (:class:`ChildJobs`). They talk over a socket pair, one
JSON object a line (:class:`Channel`), plain data only: job ids, brain ids, counts; nothing is
pickled.

- API -> child: ``{"settings": {...}}`` first (the API's settings: the same SQLite file and data
  dir), then ``{"run": job_id}`` for every dispatched job, and ``{"stop": true}`` at shutdown (the
  child finishes its running jobs, then exits);
- child -> API: ``{"ready": pid}`` once it takes jobs; ``{"changed": [brain ids] | null}`` for
  every commit that touched a brain, which the API's listeners (its serving cache, its job waiter)
  hear as their own; ``{"counts": [[brain id, field, amount], ..], "dropped": [brain ids]}``, what
  its commits counted for ``/metrics`` (``service.job_counts``).

What the child does with the ids is ``service.job_process``'s concern. The writers of a brain in
both processes exclude each other through file locks (``service.locks.FileLocks``), and the data
dir's lock is shared with the child (``service.datadir.adopt``).

Supervision: the child exits as soon as the API does, however the API ended (the socket's end, or
a new parent pid). When the child dies, the API starts another one and recovers as after a restart
(``recover``, handed down by the composition root): the jobs the dead one had are failed and wake
jobs are submitted again for every unlearned backlog; jobs dispatched since its death go to the new
child. Restarts back off (1 s, 2 s, .. 30 s) while children die young.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterator
from pathlib import Path

from service.settings import Settings

log = logging.getLogger(__name__)

PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # where ``service`` is importable from
MAX_LINE = 1 << 20  # longest message accepted: ids and counts only
YOUNG = 60.0  # a child that dies younger than this makes the next start wait (restart back-off)


class Channel:
    """JSON objects, one a line, over a stream socket; ``send`` is safe from any thread."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._send = threading.Lock()

    def send(self, message: dict) -> None:
        """OSError when the other end is gone."""
        data = json.dumps(message, separators=(",", ":")).encode() + b"\n"
        with self._send:
            self.sock.sendall(data)

    def messages(self, *, alive: Callable[[], bool] = lambda: True, poll: float = 1.0) -> Iterator[dict]:
        """The messages received, until the other end closes or ``alive()`` (asked every ``poll``
        seconds while nothing arrives) says to stop."""
        self.sock.settimeout(poll)
        buffer = b""
        while True:
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                if not alive():
                    return
                continue
            except OSError:
                return
            if not chunk:
                return
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            if len(buffer) > MAX_LINE:
                log.warning("dropped an overlong message on the job channel")
                buffer = b""
            for line in lines:
                try:
                    message = json.loads(line)
                except ValueError:
                    log.warning("ignored a malformed message on the job channel: %r", line[:200])
                    continue
                if isinstance(message, dict):
                    yield message

    def close(self) -> None:
        self.sock.close()


def child_settings(settings: Settings) -> dict:
    """What the child is told of the API's settings: all of them but the admin key (it serves no
    requests), as JSON."""
    return settings.model_dump(mode="json", exclude={"admin_key"})


class ChildJobs:
    """The executor of the embedded API: dispatches job ids to its job process and keeps one alive.

    ``changed(ids | None)``: the child committed changes to these brains (None: to any);
    ``counted(increments, dropped)``: what its commits counted; ``recover(keep)``: the child died,
    fail its running jobs and hand its queued ones on, but ``keep`` (already with its successor), and
    re-submit its backlogs;
    ``claim_fd``: the data dir's locked descriptor, inherited by the child."""

    def __init__(self, settings: Settings, *, changed: Callable[[list[int] | None], None],
                 counted: Callable[[list[tuple[int, str, float]], set[int]], None],
                 recover: Callable[[Collection[str]], object], claim_fd: int | None = None) -> None:
        self.settings = settings
        self.changed, self.counted, self.recover = changed, counted, recover
        self.claim_fd = claim_fd
        self.ready = threading.Event()  # the current child takes jobs
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._channel: Channel | None = None
        self._pending: list[str] = []  # dispatched while no child could be told
        self._since_death: set[str] | None = None  # dispatched since the last child died
        self._closing = False
        self._restarts = 0  # deaths in a row of children that died young
        self._spawn()
        self._supervisor = threading.Thread(target=self._supervise, name="job-process", daemon=True)
        self._supervisor.start()

    @property
    def pid(self) -> int | None:
        """The current job process's pid."""
        proc = self._proc
        return proc.pid if proc is not None else None

    # -- the executor's interface -------------------------------------------------------------------
    def dispatch(self, job_id: str, kind: str) -> None:
        with self._lock:
            if self._since_death is not None:
                self._since_death.add(job_id)
            if self._channel is not None:
                try:
                    self._channel.send({"run": job_id})
                    return
                except OSError:  # the child just died: its successor gets the job
                    pass
            self._pending.append(job_id)

    def shutdown(self) -> None:
        """Stop the child once its running jobs have ended (at most the lock timeout, then kill it)."""
        with self._lock:
            self._closing = True
            channel, proc = self._channel, self._proc
        if channel is not None:
            try:
                channel.send({"stop": True})
            except OSError:
                pass
        if proc is not None:
            try:
                proc.wait(timeout=self.settings.lock_timeout_seconds)
            except subprocess.TimeoutExpired:
                log.warning("job process %s did not stop in time: killed", proc.pid)
                proc.kill()
                proc.wait()
        self._supervisor.join(timeout=10)
        if channel is not None:
            channel.close()

    # -- the child's lifetime -----------------------------------------------------------------------
    def _spawn(self) -> None:
        ours, theirs = socket.socketpair()
        fds = [theirs.fileno(), *([self.claim_fd] if self.claim_fd is not None else [])]
        cmd = [sys.executable, "-m", "service.job_process", "--channel", str(theirs.fileno())]
        if self.claim_fd is not None:
            cmd += ["--data-dir-lock", str(self.claim_fd)]
        path = os.pathsep.join(p for p in (str(PACKAGE_ROOT), os.environ.get("PYTHONPATH", "")) if p)
        try:
            proc = subprocess.Popen(cmd, pass_fds=fds, env={**os.environ, "PYTHONPATH": path})
        finally:
            theirs.close()
        channel = Channel(ours)
        self.ready.clear()
        with self._lock:
            self._proc, self._channel = proc, channel
            pending, self._pending = self._pending, []
            try:
                channel.send({"settings": child_settings(self.settings)})
                for job_id in pending:
                    channel.send({"run": job_id})
            except OSError:  # died at once: the supervisor starts another
                self._pending = pending
        log.info("job process %s started", proc.pid)

    def _supervise(self) -> None:
        while True:
            channel, proc, born = self._channel, self._proc, time.monotonic()
            for message in channel.messages():
                self._heard(message)
            proc.wait()
            channel.close()
            with self._lock:
                if self._closing:
                    return
                self._channel = None
                self._since_death = set()
            log.error("job process %s died (exit status %s); starting another", proc.pid, proc.returncode)
            young = time.monotonic() - born < YOUNG
            self._restarts = self._restarts + 1 if young else 0
            if young:
                time.sleep(min(30.0, 2.0 ** (self._restarts - 1)))
            with self._lock:
                if self._closing:
                    return
            self._spawn()
            with self._lock:
                keep, self._since_death = self._since_death | set(self._pending), None
            try:
                self.recover(keep)
            except Exception:
                log.exception("recovery after the job process died failed; the next start retries it")

    def _heard(self, message: dict) -> None:
        try:
            if "changed" in message:
                ids = message["changed"]
                self.changed(None if ids is None else [int(i) for i in ids])
            elif "counts" in message:
                self.counted([(int(b), str(f), _number(n)) for b, f, n in message["counts"]],
                             {int(b) for b in message.get("dropped", [])})
            elif "ready" in message:
                self.ready.set()
                log.info("job process %s takes jobs", message["ready"])
        except (TypeError, ValueError) as exc:
            log.warning("ignored a malformed message from the job process (%s): %r", exc, message)
        except Exception:
            log.exception("handling a message from the job process failed")


def _number(value: object) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"not a number: {value!r}")
    return value
