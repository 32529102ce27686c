"""The console entry (`python -m realtime`) as a user runs it: streaming a file, listening to a room, and the
one-line errors (exit 2, no traceback) for a missing file, a model that cannot be had, and bad settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from realtime.config import Settings
from testbed.server import free_port
from testbed.speech import ROOT, english, normalise, wer

pytestmark = pytest.mark.slow


def realtime(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "realtime", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, env=env)


def assert_one_line_error(proc: subprocess.CompletedProcess, code: int = 2) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("realtime"), lines
    return lines[0]


def offline_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """No network and an empty Hugging Face cache: a hub model name cannot be resolved."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HF_", "HUGGINGFACE_", "REALTIME_", "TRANSFORMERS_"))}
    hf_home = tmp_path / "hf-home"
    hf_home.mkdir()
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(hf_home), REALTIME_CACHE_DIR=str(tmp_path / "cache"), **extra)
    return env


def transcript(server, room: str) -> dict:
    with urllib.request.urlopen(f"{server.http}/v1/rooms/{room}/transcript", timeout=10) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def shortest_clip(clips):
    return min(english(clips), key=lambda c: len(c.samples()))


@pytest.fixture(scope="module")
def streamed(server, shortest_clip):
    """`realtime stream --jsonl` of the shortest English clip into room cli-x (the listen test joins it late)."""
    started = time.monotonic()
    proc = realtime("stream", str(shortest_clip.path), "--server", server.url, "--room", "cli-x", "--speed", "0",
                    "--jsonl", "--language", "en")
    return proc, time.monotonic() - started


def test_stream_jsonl(server, streamed, shortest_clip):
    proc, elapsed = streamed
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    assert events and all(isinstance(e.get("t"), float | int) and isinstance(e.get("seq"), int) for e in events)
    assert events[0]["type"] == "hello" and events[0]["room"] == "cli-x" and events[0]["role"] == "speaker"
    kinds = {e["type"] for e in events}
    assert {"hello", "status", "final"} <= kinds and "error" not in kinds, kinds
    finals = [e for e in events if e["type"] == "final"]
    assert all(f["text"].strip() and f["language"] == "en" and f["words"] for f in finals), finals
    text = " ".join(f["text"] for f in finals)
    assert wer(shortest_clip.reference, text) < 0.5, (shortest_clip.reference, text)
    assert events[-1]["type"] == "status" and events[-1]["state"] == "stopped", events[-1]
    assert [f["text"] for f in transcript(server, "cli-x")["finals"]] == [f["text"] for f in finals]
    print(f"stream --jsonl took {elapsed:.1f} s: {text!r}")


def test_stream_human_output(server, shortest_clip):
    room = "cli-human"
    proc = realtime("stream", str(shortest_clip.path), "--server", server.url, "--room", room, "--speed", "0",
                    "--language", "en")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    finals = transcript(server, room)["finals"]
    assert finals and all(f["text"].strip() for f in finals)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    # Not a terminal: no partial rewriting, one "[h:mm:ss] text" line per final and nothing else.
    assert "\x1b" not in proc.stdout
    assert len(lines) == len(finals), proc.stdout
    for line, final in zip(lines, finals, strict=True):
        assert line.startswith("[0:00:") and final["text"] in line, (line, final)
    assert set(normalise(shortest_clip.reference).split()) & set(normalise(proc.stdout).split())


def test_stream_missing_file():
    proc = realtime("stream", "/nonexistent.wav", "--server", "ws://127.0.0.1:9")
    line = assert_one_line_error(proc)
    assert "/nonexistent.wav" in line
    assert proc.stdout == ""


def test_stream_not_an_audio_file(tmp_path):
    bogus = tmp_path / "notes.wav"
    bogus.write_text("these are not samples\n" * 50)
    line = assert_one_line_error(realtime("stream", str(bogus), "--server", "ws://127.0.0.1:9"))
    assert str(bogus) in line


def test_stream_server_unreachable(shortest_clip):
    port = free_port()
    proc = realtime("stream", str(shortest_clip.path), "--server", f"ws://127.0.0.1:{port}", "--speed", "0",
                    timeout=60)
    line = assert_one_line_error(proc, code=1)
    assert "cannot reach" in line and str(port) in line


def test_serve_hub_model_offline_fails_fast(tmp_path):
    started = time.monotonic()
    proc = realtime("serve", "--model", "large-v3", "--port", str(free_port()), env=offline_env(tmp_path),
                    timeout=60)
    elapsed = time.monotonic() - started
    line = assert_one_line_error(proc)
    assert "large-v3" in line and "HF_HUB_OFFLINE" in line, line
    assert elapsed < 30, elapsed
    assert "serving" not in proc.stdout


def test_serve_missing_model_dir(tmp_path):
    proc = realtime("serve", "--model", "/nonexistent/dir", "--port", str(free_port()), env=offline_env(tmp_path),
                    timeout=60)
    line = assert_one_line_error(proc)
    assert "/nonexistent/dir" in line, line


def test_serve_model_dir_without_weights(tmp_path):
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    proc = realtime("serve", "--model", str(empty), "--port", str(free_port()), env=offline_env(tmp_path),
                    timeout=60)
    line = assert_one_line_error(proc)
    assert str(empty) in line and "model.bin" in line, line


def test_serve_bad_port_env(tmp_path):
    proc = realtime("serve", env=offline_env(tmp_path, REALTIME_PORT="notanumber"), timeout=60)
    line = assert_one_line_error(proc)
    assert "REALTIME_PORT" in line and "notanumber" in line, line


def test_listen_late_join(server, streamed):
    assert streamed[0].returncode == 0
    finals = transcript(server, "cli-x")["finals"]
    assert finals
    started = time.monotonic()
    proc = realtime("listen", "cli-x", "--server", server.url, "--jsonl", "--idle", "2", timeout=60)
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    assert events[0]["type"] == "hello" and events[0]["role"] == "listener" and events[0]["finals"] == len(finals)
    heard = [e for e in events if e["type"] == "final"]
    assert [(f["id"], f["text"], f["seq"]) for f in heard] == [(f["id"], f["text"], f["seq"]) for f in finals]
    assert 2 <= elapsed < 30, elapsed  # it waited out --idle, then left on its own


def test_listen_human_output(server, streamed):
    finals = transcript(server, "cli-x")["finals"]
    proc = realtime("listen", "cli-x", "--server", server.url, "--idle", "1", timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert [line.split("] ", 1)[1] for line in lines] == [f["text"] for f in finals], proc.stdout


def test_help_lists_commands_and_flags():
    top = realtime("--help", timeout=30)
    assert top.returncode == 0, top.stderr
    for command in ("serve", "stream", "listen"):
        assert command in top.stdout
    serve = realtime("serve", "--help", timeout=30)
    assert serve.returncode == 0, serve.stderr
    flags = {"--" + f.name.replace("_", "-") for f in Settings.fields()}
    assert {"--vad-aggressiveness", "--model", "--port", "--max-speakers"} <= flags
    missing = [flag for flag in flags if flag not in serve.stdout]
    assert not missing, missing
    assert "--no-vad-silero" in serve.stdout
    stream = realtime("stream", "--help", timeout=30)
    assert stream.returncode == 0
    for flag in ("--room", "--server", "--speed", "--jsonl", "--language", "--prompt"):
        assert flag in stream.stdout


def test_unknown_flag_is_a_usage_error():
    proc = realtime("serve", "--no-such-flag", timeout=30)
    assert proc.returncode == 2
    assert "unrecognized arguments: --no-such-flag" in proc.stderr and "Traceback" not in proc.stderr
