"""Helpers the benchmark scripts share: logging, ports, CPU time, pinning, interrupts,
percentiles, log tails and which commit was measured."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


class BenchmarkError(Exception):
    """A condition that makes the measurement meaningless: the run stops with this message."""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pinned(cmd: list[str], cpus: str | None) -> list[str]:
    return ["taskset", "-c", cpus, *cmd] if cpus else cmd


def cpu_ticks(pid: int | None) -> int | None:
    """utime + stime of ``pid`` (all its threads) in clock ticks, or None if unreadable."""
    if pid is None:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of ``values`` (any order); NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(pct / 100.0 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def tail(path: Path, lines: int = 25) -> str:
    if not path.exists():
        return ""
    return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


def checkout() -> str:
    """The commit measured, and whether Stockgraph's code differs from it."""
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--", "stockgraph"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    return head + (" with local changes to stockgraph/" if dirty else "")


def client_token(
    *,
    python: str,
    env: dict[str, str],
    workdir: Path,
    base_url: str,
    tenant: str,
    scopes: str = "inventory:read",
) -> str:
    """A bearer token for a new OAuth client of ``tenant``, made with ``stockgraph clients
    create`` (the database from ``env``) and exchanged at ``base_url``'s ``/oauth/token``."""
    import httpx

    command = [python, "-m", "stockgraph.cli", "clients", "create", "--json"]
    command += ["--tenant", tenant, "--scopes", scopes]
    made = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env=env,
        cwd=workdir,
        timeout=120,
        check=False,
    )
    if made.returncode != 0:
        raise BenchmarkError(f"stockgraph clients create failed:\n{made.stderr[-2000:]}")
    client = json.loads(made.stdout.strip().splitlines()[-1])
    response = httpx.post(
        f"{base_url}/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(client["client_id"], client["client_secret"]),
        timeout=30,
    )
    if response.status_code != 200:
        raise BenchmarkError(f"/oauth/token: HTTP {response.status_code}: {response.text[:300]}")
    return str(response.json()["access_token"])


def run_in_workdir(name: str, run: Callable[[Path], int]) -> int:
    """``run`` in a temporary folder, SIGTERM taken as Ctrl-C; the exit status: 2 when
    :class:`BenchmarkError` says the run cannot be measured, 130 when interrupted."""
    with terminate_as_interrupt(), tempfile.TemporaryDirectory(prefix=f"sg-{name}-") as tmp:
        try:
            return run(Path(tmp))
        except BenchmarkError as exc:
            log(f"{name}: {exc}")
            return 2
        except KeyboardInterrupt:
            log(f"{name}: interrupted")
            return 130
