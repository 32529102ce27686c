"""Shared fixtures: test speech and a real server process with the real shipped model."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.speech import ROOT, Clip, load_clips

ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[Clip]:
    return load_clips(tmp_path_factory.mktemp("synth-speech"))


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    path = Path(os.environ.get("REALTIME_CACHE_DIR", ROOT / ".cache"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`realtime serve` in a child process, logging to a file; `url` is its ws:// address."""

    def __init__(self, cache_dir: Path, log_path: Path, *args: str):
        self.port = free_port()
        self.url = f"ws://127.0.0.1:{self.port}"
        self.http = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        env = {**os.environ, "REALTIME_CACHE_DIR": str(cache_dir), "HF_HUB_OFFLINE": "1"}
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "realtime", "serve", "--port", str(self.port), *args],
                                     stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.http + "/healthz", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError("server did not become ready")

    def get_json(self, path: str):
        import json

        with urllib.request.urlopen(self.http + path, timeout=10) as r:
            return json.loads(r.read())

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log.close()


@pytest.fixture(scope="session")
def server(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    srv = ServerProcess(cache_dir, tmp_path_factory.mktemp("server") / "server.log")
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def offline_model(cache_dir: Path):
    """The same shipped model, in-process, for offline reference transcriptions."""
    from faster_whisper import WhisperModel

    from realtime.model import ensure_shipped_base

    return WhisperModel(str(ensure_shipped_base(cache_dir)), device="cpu", compute_type="int8")
