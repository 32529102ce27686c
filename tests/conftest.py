"""Shared fixtures: test speech and a real server process with the real shipped model."""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import pytest

from benchmarks.common import Server, free_port  # noqa: F401 (free_port is shared with the tests)
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


class ServerProcess(Server):
    """`realtime serve` in a child process, offline, on the tests' cache; `url` is its ws:// address (wss:// with
    `ssl_context`, the client context that trusts its --tls-cert)."""

    def __init__(self, cache_dir: Path, log_path: Path, *args: str, env: dict[str, str] | None = None,
                 port: int | None = None, ssl_context: ssl.SSLContext | None = None):
        super().__init__(list(args), log_path, ready_timeout=120, port=port, ssl_context=ssl_context,
                         env={"REALTIME_CACHE_DIR": str(cache_dir), "HF_HUB_OFFLINE": "1", **(env or {})})


@pytest.fixture(scope="session")
def server(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    srv = ServerProcess(cache_dir, tmp_path_factory.mktemp("server") / "server.log")
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def offline_model(cache_dir: Path):
    """The same shipped model, in-process, for offline reference transcriptions."""
    from faster_whisper import WhisperModel

    from realtime.asr.whisper import ensure_shipped_base

    return WhisperModel(str(ensure_shipped_base(cache_dir)), device="cpu", compute_type="int8")
