"""Hosts on one machine: Linux network namespaces, each linked to the test's (root) namespace by a
veth pair, for tests that run the stack's processes as if on several hosts (test_two_hosts).

Each :class:`Host` is a namespace ``pb-<run>-<label>`` with the address ``10.213.<n>.2/24`` (its
``lo`` up), and ``10.213.<n>.1`` on the root side of its link. Postgres and Redis listen on the
root namespace's loopback only, so each host gets a :class:`Forwarder` per service, listening on
its link's root side and relaying to the real one: a process in the namespace reaches them only
through its link, and cutting the link (:meth:`Host.cut`, the root side set down: packets are
dropped, no error is seen) cuts it off from both. A process runs "on" a host under
:attr:`Host.prefix`: in its network namespace, and in a UTS namespace of its own named after the
host (Celery workers' node names and job events tell hosts apart by it).

The namespaces' TCP is tuned (best effort; :data:`TUNED`): a retransmission timer capped at 1 s
(``tcp_rto_max_ms``, Linux 6.11+, and the same per socket on the forwarders' side) and more
retries, so that connections survive a cut of a few minutes and resume within a second or two of
the link coming back, instead of after up to two minutes of exponential backoff.

Every namespace, veth pair and forwarder is removed by :meth:`Hosts.close`; namespaces and
veths are named after a random run id, and each link's subnet is chosen, under a file lock, among
those no interface of the machine uses, so that concurrent runs don't collide. Needs root and
``ip``/``unshare``: :func:`require_netns` skips otherwise (fails under ``CI=true``).
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import random
import shutil
import socket
import subprocess
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.conftest import IN_CI

SUBNETS = ipaddress.ip_network("10.213.0.0/16")
ALLOCATION_LOCK = Path("/run/lock/pb-test-netns.lock")
TCP_RTO_MAX_MS = getattr(socket, "TCP_RTO_MAX_MS", 44)  # linux/tcp.h, Linux 6.11+
NS_SYSCTLS = {"net.ipv4.tcp_rto_max_ms": "1000", "net.ipv4.tcp_retries2": "255"}


def unavailable(reason: str) -> None:
    """Skip, or under CI fail: CI must never pass by skipping what it must test."""
    message = f"network namespaces are not available: {reason}"
    if IN_CI:
        pytest.fail(f"{message}; CI must run the multi-host tests", pytrace=False)
    pytest.skip(f"integration test skipped: {message}")


def require_netns() -> None:
    if os.geteuid() != 0:
        unavailable("not root")
    for tool in ("ip", "unshare", "hostname"):
        if shutil.which(tool) is None:
            unavailable(f"no `{tool}` command")


def _ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30).stdout


def _quiet(*args: str) -> None:
    """An ``ip`` command of the clean-up: whatever is already gone stays gone."""
    subprocess.run(["ip", *args], capture_output=True, timeout=30)


# -- the forwarder ---------------------------------------------------------------------------------
class Forwarder:
    """Accepts TCP connections on ``(host, port 0)`` and relays each to ``target``, both ways, two
    threads a connection. ``accepted``: connections taken so far."""

    def __init__(self, host: str, target: tuple[str, int]) -> None:
        self.target = target
        self.accepted = 0
        self._server = socket.create_server((host, 0))
        self.address = self._server.getsockname()[:2]
        self._sockets: set[socket.socket] = set()
        self._upstreams: set[socket.socket] = set()
        self._guard = threading.Lock()
        self._closed = False
        self._threads = [threading.Thread(target=self._accept, daemon=True, name=f"forward-{self.address[1]}")]
        self._threads[0].start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:  # closed
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            _tune(client)
            with self._guard:
                if self._closed:
                    client.close()
                    upstream.close()
                    return
                self.accepted += 1
                self._sockets |= {client, upstream}
                self._upstreams.add(upstream)
                pair = (client, upstream)
                threads = [threading.Thread(target=self._pump, args=(a, b, pair), daemon=True)
                           for a, b in (pair, pair[::-1])]
                self._threads += threads
            for t in threads:
                t.start()

    def _pump(self, src: socket.socket, dst: socket.socket, pair: tuple[socket.socket, socket.socket]) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        self._drop(pair)  # either side closed: close both (the other pump wakes and ends)

    def _drop(self, sockets) -> None:
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked on it (close alone does not)
            except OSError:
                pass
            s.close()
            with self._guard:
                self._sockets.discard(s)
                self._upstreams.discard(s)

    def upstream_ports(self) -> set[int]:
        """The local ports of the open connections to the target: the client ports the target sees
        (Postgres: ``pg_stat_activity.client_port``)."""
        with self._guard:
            return {s.getsockname()[1] for s in self._upstreams}

    def close(self) -> None:
        with self._guard:
            self._closed = True
            sockets = list(self._sockets)
        self._drop([self._server, *sockets])
        for t in self._threads:
            t.join(timeout=5)


def _tune(sock: socket.socket) -> None:
    """The forwarder's side of a host's connection: a retransmission timer capped at 1 s, and no
    giving up for 10 minutes (see the module docstring). Best effort."""
    for option, value in ((TCP_RTO_MAX_MS, 1000), (socket.TCP_USER_TIMEOUT, 600_000)):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, option, value)
        except OSError:
            pass


# -- hosts -------------------------------------------------------------------------------------------
@dataclass
class Host:
    ns: str  # the network namespace, and the host's name
    veth: str  # the root side of its link
    addr: str  # its address
    gateway: str  # the root side's address, where its forwarders listen
    forwarders: dict[str, Forwarder] = field(default_factory=dict)  # by the URL they stand in for
    tuned: bool = False  # whether its TCP could be tuned (module docstring)

    @property
    def prefix(self) -> list[str]:
        """The command that runs a process on this host (in its network and UTS namespaces)."""
        return ["ip", "netns", "exec", self.ns, "unshare", "--uts", "--",
                "sh", "-c", 'hostname "$0" && exec "$@"', self.ns]

    def env(self, env: dict[str, str]) -> dict[str, str]:
        """``env`` with every ``BRAIN_*`` URL of Postgres or Redis pointed at this host's forwarders."""
        out = dict(env)
        for key, value in env.items():
            if key.startswith("BRAIN_") and key.endswith("_URL") and value in self.forwarders:
                out[key] = _with_address(value, self.forwarders[value].address)
        return out

    def cut(self) -> None:
        """Cut the link: the root side down; the host's packets are dropped silently."""
        _ip("link", "set", self.veth, "down")

    def restore(self) -> None:
        _ip("link", "set", self.veth, "up")

    def netns_inode(self) -> int:
        return os.stat(f"/run/netns/{self.ns}").st_ino

    def run(self, *cmd: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """A command on this host, its output captured."""
        return subprocess.run([*self.prefix, *cmd], capture_output=True, text=True, timeout=timeout)


class Hosts:
    """The hosts of one test, created by :meth:`add`, all removed by :meth:`close`."""

    def __init__(self, urls: list[str]) -> None:
        self.run_id = uuid.uuid4().hex[:8]
        self.urls = urls  # the services each host reaches through forwarders (Postgres, Redis)
        self.hosts: list[Host] = []

    def add(self, label: str) -> Host:
        ns = f"pb-{self.run_id}-{label}"
        veth, peer = f"pb{self.run_id}{label}h", f"pb{self.run_id}{label}n"
        try:
            _ip("netns", "add", ns)
        except subprocess.CalledProcessError as exc:
            unavailable(f"`ip netns add` failed: {exc.stderr.strip()}")
        host = Host(ns=ns, veth=veth, addr="", gateway="")
        self.hosts.append(host)  # removed by close() from here on, whatever fails next
        with _allocation_lock():
            subnet = _free_subnet()
            gateway, addr = (str(subnet.network_address + i) for i in (1, 2))
            _ip("link", "add", veth, "type", "veth", "peer", "name", peer, "netns", ns)
            _ip("addr", "add", f"{gateway}/{subnet.prefixlen}", "dev", veth)
        host.addr, host.gateway = addr, gateway
        _ip("link", "set", veth, "up")
        _ip("-n", ns, "addr", "add", f"{addr}/{subnet.prefixlen}", "dev", peer)
        _ip("-n", ns, "link", "set", peer, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        tuned = subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w",
                                *(f"{k}={v}" for k, v in NS_SYSCTLS.items())], capture_output=True, timeout=30)
        host.tuned = tuned.returncode == 0
        for url in self.urls:
            parts = urlsplit(url)
            host.forwarders[url] = Forwarder(gateway, (parts.hostname, parts.port))
        return host

    def close(self) -> None:
        """Remove every forwarder, veth and namespace (the processes run in them must be gone)."""
        for host in self.hosts:
            for forwarder in host.forwarders.values():
                forwarder.close()
            _quiet("link", "del", host.veth)
            _quiet("netns", "del", host.ns)


class _allocation_lock:
    """A file lock around the choice and assignment of a subnet, among concurrent test runs."""

    def __enter__(self) -> None:
        ALLOCATION_LOCK.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(ALLOCATION_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 of :data:`SUBNETS` that no interface of the root namespace has an address in."""
    used = set()
    for line in _ip("-4", "-o", "addr", "show").splitlines():
        words = line.split()
        if "inet" in words:
            used.add(ipaddress.ip_interface(words[words.index("inet") + 1]).network)
    free = [n for n in SUBNETS.subnets(new_prefix=24)
            if n.network_address.packed[2] != 0 and not any(n.overlaps(u) for u in used)]
    if not free:
        unavailable(f"no free /24 left in {SUBNETS}")
    return random.choice(free)


def _with_address(url: str, address: tuple[str, int]) -> str:
    """``url`` with its host and port replaced (user and path kept)."""
    parts = urlsplit(url)
    user = parts.netloc.rpartition("@")[0]
    netloc = f"{user + '@' if user else ''}{address[0]}:{address[1]}"
    return urlunsplit(parts._replace(netloc=netloc))


def namespace_of(pid: int) -> int:
    """The inode of process ``pid``'s network namespace."""
    return os.stat(f"/proc/{pid}/ns/net").st_ino


def process_group(pgid: int) -> list[int]:
    """The pids of the processes in group ``pgid`` (a started process and its children: Celery's pool)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[2]) == pgid:  # fields after "(comm)": state, ppid, pgrp
                pids.append(int(entry.name))
    return pids
