"""Servers that tests and load tests run as processes of their own: a free port, waiting for it, stopping."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, *, seconds: float, describe) -> None:
    """Until 127.0.0.1:``port`` accepts connections; RuntimeError(describe()) if ``process`` exits first or
    ``seconds`` pass."""
    deadline = time.monotonic() + seconds
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode}: {describe()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"not listening on {port} after {seconds:.0f} s: {describe()}")
        time.sleep(0.05)


def stop(process: subprocess.Popen, *, timeout: float = 10, group: bool = False) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` seconds; ``group``: its whole process group (a server started
    with start_new_session=True and its workers)."""
    def send(sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig) if group else process.send_signal(sig)

    send(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        process.wait()
