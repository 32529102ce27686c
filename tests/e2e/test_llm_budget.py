"""LLM spend is bounded and honest (security review H2), against a real server and the scripted LLM endpoint:
concurrent questions cannot overspend a room's budget, what was spent survives a restart, visitors cannot freeze a
lecture's notes, the server-wide concurrency limit and daily cap hold, clients are rate-limited, a room chooses who
may ask, and a question is bounded (prompt, answer, and nothing sent when the transcript does not match)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path

import pytest

from realtime.client import stream_audio
from testbed.server import ServerProcess
from testbed.speech import english, make_lecture
from tests.fake_openai import FakeOpenAI
from tests.httpclient import code_of, http
from tests.seed import Seeded, seed_room

pytestmark = pytest.mark.slow

ADMIN = "ak_budget-test-admin-key-0123456789"
VISITORS = 3000  # tokens a room's questions and summaries may spend
ASK_TOKENS = 100


@pytest.fixture(scope="module")
async def llm():
    fake = FakeOpenAI()
    await fake.start()
    yield fake
    await fake.stop()


def start(cache_dir: Path, base: Path, llm: FakeOpenAI, *extra: str) -> ServerProcess:
    srv = ServerProcess(cache_dir, base / f"server{len(list(base.glob('*.log')))}.log", "--llm-model", "fake",
                        "--llm-base-url", llm.url, "--llm-retries", "0", "--llm-concurrency", "1",
                        "--llm-visitor-token-budget", str(VISITORS), "--ask-max-tokens", str(ASK_TOKENS),
                        "--notes-min-words", "10", "--notes-interval-s", "2", *extra,
                        env={"REALTIME_ADMIN_KEY": ADMIN, "REALTIME_DB": str(base / "budget.db")})
    return srv


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("budget")
    texts = ["ATP synthase makes ATP from ADP in the mitochondria.",
             "The cell membrane is a lipid bilayer with proteins in it.",
             "Enzymes lower the activation energy of a reaction."]
    SEEDED["bio"] = seed_room(str(path / "budget.db"), "bio", 30, texts=texts)
    return path


SEEDED: dict[str, Seeded] = {}


@pytest.fixture(scope="module")
def server(cache_dir: Path, base: Path, llm: FakeOpenAI):
    srv = start(cache_dir, base, llm)
    yield srv
    srv.stop()


def asks_sent(llm: FakeOpenAI) -> list[dict]:
    return [r["body"] for r in llm.requests if r["body"]["messages"][0]["content"].startswith("You answer")]


def spent(base: Path, pool: str) -> int:
    with sqlite3.connect(f"file:{base / 'budget.db'}?mode=ro", uri=True) as db:
        return db.execute(f"SELECT llm_tokens_{pool} FROM rooms WHERE name = 'bio'").fetchone()[0]


def ask(srv, question: str, key: str | None = ADMIN, room: str = "bio") -> tuple[int, dict]:
    status, _, body = http(srv, "POST", f"/v1/rooms/{room}/ask", {"question": question}, key)
    return status, json.loads(body)


async def test_concurrent_questions_cannot_overspend_the_room(server, base, llm):
    llm.delay_s = 0.3  # a slow model: every question is in flight before the first is answered
    try:
        loop = asyncio.get_running_loop()
        answers = await asyncio.gather(*(loop.run_in_executor(None, ask, server, f"What does ATP synthase make {i}?")
                                         for i in range(40)))
    finally:
        llm.delay_s = 0.0
    assert all(status == 200 for status, _ in answers)
    sources = [a["source"] for _, a in answers]
    calls = asks_sent(llm)
    assert 0 < len(calls) == sources.count("llm") < 40
    assert spent(base, "visitors") <= VISITORS  # what each call reserved before it was made covers what it cost
    assert llm.max_inflight == 1  # --llm-concurrency 1
    assert all(c["max_tokens"] <= ASK_TOKENS for c in calls)
    for _ in range(40):  # what the calls did not use of their reservations is spent next, then no call is made
        status, answer = await in_thread(ask, server, "What does ATP synthase make?")
        if answer["source"] == "extractive":
            break
    assert answer["source"] == "extractive" and spent(base, "visitors") <= VISITORS
    calls = len(asks_sent(llm))
    assert (await in_thread(ask, server, "What does ATP synthase make?"))[1]["source"] == "extractive"
    assert len(asks_sent(llm)) == calls


async def in_thread(fn, *args):
    """A blocking request off the event loop, which also runs the scripted LLM the server calls."""
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


async def test_the_spend_survives_a_restart_and_visitors_do_not_freeze_the_notes(server, base, llm, cache_dir,
                                                                                  clips):
    before = len(llm.requests)
    server.stop()
    restarted = start(cache_dir, base, llm)
    try:
        assert (await in_thread(ask, restarted, "What does ATP synthase make?"))[1]["source"] == "extractive"
        assert len(llm.requests) == before
        lecture = make_lecture(english(clips)[:2], lead_s=0.5)
        result = await stream_audio(restarted.url, "bio", lecture.audio, speed=0, language="en",
                                    key=SEEDED["bio"].speaker_key)
        assert result.finals
        for _ in range(40):  # with an LLM the closing notes update runs after `stopped`
            if spent(base, "notes") > 0:
                break
            await asyncio.sleep(0.5)
        assert spent(base, "notes") > 0 and spent(base, "visitors") <= VISITORS
        status, _, body = await in_thread(http, restarted, "GET", "/v1/rooms/bio/export?format=md")
        assert status == 200 and "## Notes" in body
    finally:
        restarted.stop()


@pytest.fixture(scope="module")
def capped(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory, llm: FakeOpenAI):
    base = tmp_path_factory.mktemp("capped")
    seeded = seed_room(str(base / "budget.db"), "bio", 10, texts=["ATP synthase makes ATP in the mitochondria."])
    srv = start(cache_dir, base, llm, "--llm-daily-token-cap", "200", "--ask-per-minute", "60")
    srv.seeded = seeded
    yield srv
    srv.stop()


def test_the_daily_cap_holds_server_wide(capped, llm):
    before = len(llm.requests)
    status, answer = ask(capped, "What does ATP synthase make?")
    assert status == 200 and answer["source"] == "extractive" and len(llm.requests) == before
    assert capped.get_json("/healthz")["notes"]["no_budget"]["day"] >= 1


def test_anonymous_questions_are_rate_limited_per_client(capped):
    statuses = [ask(capped, "What does ATP synthase make?", key=None)[0] for _ in range(5)]
    assert statuses[:3] == [200, 200, 200] and statuses[3:] == [429, 429]
    status, headers, body = http(capped, "POST", "/v1/rooms/bio/ask", {"question": "ATP?"})
    assert status == 429 and code_of(body) == "rate_limited" and int(headers["Retry-After"]) >= 1
    assert ask(capped, "What does ATP synthase make?")[0] == 200  # the admin is not limited


def test_a_room_chooses_who_may_ask(capped):
    time.sleep(3)  # the rate limit's burst is back (60 a minute)
    speaker = capped.seeded.speaker_key
    for policy, anonymous, keyed in (("nobody", 403, 403), ("viewers", 403, 200), ("anyone", None, 200)):
        status, _, body = http(capped, "PATCH", "/v1/rooms/bio", {"ask": policy}, speaker)
        assert status == 200 and json.loads(body)["ask"] == policy, body
        if anonymous is not None:
            status, answer = ask(capped, "What is ATP?", key=None)
            assert status == anonymous and answer["code"] == "not_allowed"
        assert ask(capped, "What is ATP?", key=speaker)[0] == keyed
    assert http(capped, "PATCH", "/v1/rooms/bio", {"ask": "everyone"}, speaker)[0] == 400
    assert http(capped, "PATCH", "/v1/rooms/bio", {"ask": "nobody"})[0] == 404


def test_a_question_is_bounded(capped, llm):
    assert ask(capped, "x" * 501)[0] == 400
    before = len(llm.requests)
    status, answer = ask(capped, "Which footballer scored the most goals?")  # nothing in the lecture matches
    assert status == 200 and answer["citations"] == [] and len(llm.requests) == before
