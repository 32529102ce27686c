"""A real `realtime serve` in a child process, for the tests and the benchmarks: `Server` (what the benchmark harness
measures: CPU seconds, peak RSS), `ServerProcess` (the tests' variant: offline, on the tests' cache), `free_port`,
and the folders both use: CACHE (models, synthesized speech) and ARTIFACTS (what the tests leave to look at)."""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from testbed import ROOT

CACHE = ROOT / ".cache"
ARTIFACTS = ROOT / "test-artifacts"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`realtime serve` in a child process that the harness can measure (CPU seconds, peak RSS).

    Unlike ServerProcess (the tests' variant) it leaves HF_HUB_OFFLINE alone, so `--model large-v3` may download on
    a connected machine, and it waits longer for a large model to load. Rooms open on first use (`--open-rooms`, as
    with `make serve`) unless the environment given sets REALTIME_OPEN_ROOMS=0 or an admin key.
    """

    def __init__(self, args: list[str], log_path: Path, ready_timeout: float = 900.0,
                 env: dict[str, str] | None = None, port: int | None = None,
                 ssl_context: ssl.SSLContext | None = None):
        """`ssl_context`: the server serves TLS (`--tls-cert`): `url` and `http` are wss:// and https://, and
        readiness is checked with this client context."""
        self.args = args
        self.port = port or free_port()
        self.ssl_context = ssl_context
        secure = "s" if ssl_context is not None else ""
        self.url = f"ws{secure}://127.0.0.1:{self.port}"
        self.http = f"http{secure}://127.0.0.1:{self.port}"
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        # A fresh database of its own beside the log (rooms persist: a run must not inherit an earlier run's rooms),
        # unless the caller passes one (a restart test).
        fresh = str(log_path.with_suffix(".db"))
        env = {**os.environ, "REALTIME_CACHE_DIR": os.environ.get("REALTIME_CACHE_DIR", str(CACHE)),
               "REALTIME_DB": fresh, "REALTIME_OPEN_ROOMS": "1", **(env or {})}
        self.admin_key = env.get("REALTIME_ADMIN_KEY") or None  # /healthz details and /metrics need it
        self.db = env["REALTIME_DB"]
        if self.db == fresh:
            for suffix in ("", "-wal", "-shm"):
                Path(fresh + suffix).unlink(missing_ok=True)
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "realtime", "serve", "--port", str(self.port), *args],
                                     stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        deadline = time.monotonic() + ready_timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {log_path.read_text(errors='replace')[-2000:]}")
            try:
                self.health()
                return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("server did not become ready") from None
                time.sleep(0.3)

    def get_json(self, path: str) -> Any:
        headers = {"Authorization": f"Bearer {self.admin_key}"} if self.admin_key else {}
        request = urllib.request.Request(self.http + path, headers=headers)
        with urllib.request.urlopen(request, timeout=10, context=self.ssl_context) as r:
            return json.loads(r.read())

    def health(self) -> dict[str, Any]:
        return self.get_json("/healthz")

    def cpu_s(self) -> float:
        """User + system CPU seconds the server process has used so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
        return float("nan")

    def reset_peak_rss(self) -> None:
        """Restart VmHWM at the current RSS (Linux: 5 > /proc/PID/clear_refs), so each section reports its own."""
        try:
            Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")
        except OSError:
            pass

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


class ServerProcess(Server):
    """`realtime serve` in a child process, offline, on the tests' cache; `url` is its ws:// address (wss:// with
    `ssl_context`, the client context that trusts its --tls-cert)."""

    def __init__(self, cache_dir: Path, log_path: Path, *args: str, env: dict[str, str] | None = None,
                 port: int | None = None, ssl_context: ssl.SSLContext | None = None):
        super().__init__(list(args), log_path, ready_timeout=120, port=port, ssl_context=ssl_context,
                         env={"REALTIME_CACHE_DIR": str(cache_dir), "HF_HUB_OFFLINE": "1", **(env or {})})
