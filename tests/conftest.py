"""Shared fixtures: test speech and a real server process with the real shipped model (the helpers behind them, and
the constants tests use, are in testbed/: import those from there, not from this file)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from testbed.server import CACHE, ServerProcess
from testbed.speech import Clip, load_clips


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[Clip]:
    return load_clips(tmp_path_factory.mktemp("synth-speech"))


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    path = Path(os.environ.get("REALTIME_CACHE_DIR", CACHE))
    path.mkdir(parents=True, exist_ok=True)
    return path


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


@pytest.fixture(scope="module")
async def fake_llm():
    """The scripted OpenAI-compatible server (tests/fake_openai.py), one per test module that asks for it."""
    from tests.fake_openai import FakeOpenAI

    fake = FakeOpenAI()
    await fake.start()
    yield fake
    await fake.stop()
