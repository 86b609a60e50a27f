"""Processes and ports on this machine: free ports on 127.0.0.1, waiting for a listener,
and stopping a process by its pid (SIGTERM, then SIGKILL)."""

from __future__ import annotations

import signal
import socket
import subprocess
import time

import psutil

HOST = "127.0.0.1"


def free_port(host: str = HOST) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_for_port(host: str, port: int, timeout: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with code {process.returncode} before listening")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout:.0f} s")


def alive(pid: int) -> bool:
    """Running, not merely present: a daemon reparented to an init that is slow to
    reap stays in the process table as a zombie after it has exited. But a process
    whose main thread has ended shows as a zombie too while its other threads still run
    (a JVM shutting down: Kafka still holds its log directory's lock), so a zombie is
    dead only once its last thread is gone."""
    try:
        process = psutil.Process(pid)
        return process.status() != psutil.STATUS_ZOMBIE or process.num_threads() > 1
    except psutil.NoSuchProcess:
        return False


def wait_until_dead(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def stop_pid(pid: int, timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` s (at once with ``timeout=0``); a pid that
    is gone is fine. Waits with ``alive`` rather than ``wait()``: a process that is not
    our child stays a zombie until init reaps it, and waiting for that would always run
    into the timeout."""
    try:
        process = psutil.Process(pid)
        process.send_signal(signal.SIGKILL if timeout == 0 else signal.SIGTERM)
    except psutil.NoSuchProcess:
        return
    wait_until_dead(pid, max(timeout, 5))
    if alive(pid):
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
        wait_until_dead(pid, 5)
