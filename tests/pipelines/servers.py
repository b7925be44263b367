"""Servers the tests start: on 127.0.0.1, a free port, in their own session, stopped by PID."""

import ipaddress
import os
import signal
import socket
import subprocess
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest


def is_loopback(ip: str) -> bool:
    """127.0.0.0/8, ::1, or 127.x mapped into IPv6 (``::ffff:127.0.0.1``, as gRPC binds)."""
    address = ipaddress.ip_address(ip)
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or bool(mapped and mapped.is_loopback)


def listening_sockets(pids) -> list[tuple[str, str, int]]:
    """(process name, address, port) of every listening TCP socket of these processes and of
    everything they started."""
    tree = set()
    for pid in pids:
        try:
            parent = psutil.Process(pid)
            tree |= {pid} | {c.pid for c in parent.children(recursive=True)}
        except psutil.NoSuchProcess:
            continue
    found = []
    for c in psutil.net_connections(kind="tcp"):
        if c.status == psutil.CONN_LISTEN and c.pid in tree:
            try:
                name = psutil.Process(c.pid).name()
            except psutil.NoSuchProcess:
                continue
            found.append((name, c.laddr.ip, c.laddr.port))
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def served(
    command: list,
    ready_url: str,
    *,
    seconds: float = 180,
    log: Path | None = None,
    env: dict | None = None,
):
    """Start ``command``; yield its process once ``ready_url`` answers; stop it and everything
    it started (its own session) on the way out. A fresh venv compiles MLflow's modules on the
    first start, hence the long wait."""
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [str(c) for c in command],
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + seconds
        while True:
            try:
                urllib.request.urlopen(ready_url, timeout=1)
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(f"{command[0]} exited with {proc.returncode} (log: {log})")
                if time.monotonic() > deadline:
                    pytest.fail(f"{ready_url} did not answer in {seconds:.0f} s")
                time.sleep(0.5)
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if log:
            out.close()
