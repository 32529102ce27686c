"""The bundled local LLM against the REAL 0.5B model (the `llm` extra; `make test` installs it): the managed
llama.cpp child starts, the real `openai` SDK gets a json_schema-constrained answer that parses, a killed child comes
back (restart counted) and answers again, `realtime llm` prints a base URL that answers, and `realtime serve
--llm-model local-0.5b` reports the model in /healthz and /metrics and stops it at shutdown. Few, short calls: the
machine has 2 cores. Timings from llama.cpp's answers go to test-artifacts/local_llm.json."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from realtime.llm.weights import MODELS, WeightsError, part_paths
from testbed.server import ARTIFACTS, ServerProcess, free_port
from testbed.speech import ROOT

MODEL = "local-0.5b"
SCHEMA = {"type": "object", "additionalProperties": False, "required": ["topic", "bullets"],
          "properties": {"topic": {"type": "string"},
                         "bullets": {"type": "array", "minItems": 1, "maxItems": 3, "items": {"type": "string"}}}}
LECTURE = ("Today we look at photosynthesis. Plants take in carbon dioxide and water and, with the energy of "
           "sunlight captured by chlorophyll, make glucose and release oxygen. The light reactions happen in the "
           "thylakoid membranes; the Calvin cycle fixes carbon in the stroma.")
MESSAGES = [{"role": "system", "content": "You write short lecture notes as JSON."},
            {"role": "user", "content": f"Transcript: {LECTURE}\nGive the topic and up to three bullets."}]


def _missing() -> str | None:
    if importlib.util.find_spec("xllamacpp") is None:
        return "xllamacpp"
    try:
        part_paths(MODELS[MODEL])
    except WeightsError as exc:
        return str(exc)
    return None


MISSING = _missing()
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(MISSING is not None, reason=f"the llm extra is not installed (pip install -e "
                                                             f"'.[llm]'): {MISSING}")]
FIGURES: dict[str, dict] = {}


def record(name: str, response, **extra) -> None:
    timings = (response.model_extra or {}).get("timings") or {}
    FIGURES[name] = {"prompt_tok_s": timings.get("prompt_per_second"),
                     "generation_tok_s": timings.get("predicted_per_second"),
                     "prompt_tokens": timings.get("prompt_n"), "generated_tokens": timings.get("predicted_n"),
                     **extra}
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "local_llm.json").write_text(json.dumps(FIGURES, indent=2))


def rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


async def ask(base_url: str):
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=base_url, api_key="unused", timeout=120, max_retries=0)
    try:
        response = await client.chat.completions.create(
            model=MODEL, messages=MESSAGES, temperature=0, max_tokens=160,
            response_format={"type": "json_schema", "json_schema": {"name": "notes", "schema": SCHEMA,
                                                                      "strict": True}})
    finally:
        await client.close()
    answer = json.loads(response.choices[0].message.content)
    assert set(answer) == {"topic", "bullets"} and isinstance(answer["topic"], str), answer
    assert 1 <= len(answer["bullets"]) <= 3 and all(isinstance(b, str) and b for b in answer["bullets"]), answer
    return response


@pytest.fixture(scope="module")
async def local(cache_dir):
    from realtime.llm.process import LocalLLM

    llm = LocalLLM(MODEL, cache_dir=cache_dir, backoff_s=(0.5, 5.0))
    await llm.start()
    yield llm
    await llm.stop()


async def test_the_managed_model_answers_a_json_schema_request(local):
    assert local.healthy and local.restarts == 0 and local.pid
    with urllib.request.urlopen(f"{local.base_url}/models", timeout=10) as r:
        assert MODEL in json.dumps(json.loads(r.read()))
    response = await ask(local.base_url)
    assert response.usage.completion_tokens > 0
    record(MODEL, response, threads=local.threads, load_s=round(local.load_s, 2), rss_mb=rss_mb(local.pid))


async def test_a_killed_child_comes_back_and_answers_again(local):
    import asyncio

    pid = local.pid
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 120
    while not (local.restarts == 1 and local.healthy and local.pid not in (None, pid)):
        assert time.monotonic() < deadline, local.health()
        await asyncio.sleep(0.2)
    assert "exited" in local.last_error or local.last_error == ""
    await ask(local.base_url)
    assert local.restarts == 1


def test_realtime_llm_prints_a_base_url_that_answers(cache_dir):
    from openai import OpenAI

    port = free_port()
    env = {**os.environ, "REALTIME_CACHE_DIR": str(cache_dir)}
    proc = subprocess.Popen([sys.executable, "-m", "realtime", "llm", "--model", MODEL, "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    try:
        line = proc.stdout.readline()  # the first line once it answers
        match = re.search(r"serving on (http://127\.0\.0\.1:(\d+)/v1)", line)
        assert match, (line, proc.stderr.read() if proc.poll() is not None else "")
        base_url = match.group(1)
        assert int(match.group(2)) == port
        client = OpenAI(base_url=base_url, api_key="unused", timeout=120, max_retries=0)
        answer = client.chat.completions.create(model="any-name", messages=[{"role": "user", "content": "Say hi."}],
                                                max_tokens=8, temperature=0)
        assert answer.choices[0].message.content.strip()
        client.close()
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert proc.wait(30) == 0
        assert "Traceback" not in proc.stderr.read()
        with pytest.raises(OSError):  # the llama.cpp child went with it
            urllib.request.urlopen(f"{base_url}/models", timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_runs_the_local_model_and_reports_it(cache_dir, tmp_path):
    server = ServerProcess(cache_dir, tmp_path / "server.log", env={"REALTIME_LLM_MODEL": MODEL})
    try:
        health = server.health()["local_llm"]
        assert health["up"] is True and health["model"] == MODEL and health["restarts"] == 0, health
        assert server.health()["notes"]["engine"] == "llm"
        with urllib.request.urlopen(f"{server.http}/metrics", timeout=10) as r:
            text = r.read().decode()
        assert f'realtime_local_llm_up{{model="{MODEL}",port="{health["port"]}"}} 1' in text, text
        assert f'realtime_local_llm_restarts_total{{model="{MODEL}"}} 0' in text
        with urllib.request.urlopen(f"{health['base_url']}/models", timeout=10) as r:
            assert r.status == 200
    finally:
        server.stop()
    with pytest.raises(OSError):  # stopped with the server
        urllib.request.urlopen(f"{health['base_url']}/models", timeout=5)
    assert "Traceback" not in (tmp_path / "server.log").read_text(errors="replace")
