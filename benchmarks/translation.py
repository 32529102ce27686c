"""What caption translation costs and how fast it follows the captions, on the dev lecture at 1.0x:

- for each endpoint arm, the lecture is streamed twice on one server: with nobody asking for a translation, then
  with one viewer each in `--languages` (default de,zh), so the captions' word end -> committed can be compared
  between the two runs of the same process;
- final sent -> translation sent, median and p95 (the server's own clock: `/healthz` translations.latency_s);
- translation tokens per lecture minute per language (`/healthz` translations.tokens_by_language);
- clause-level early translation, simulated from the run's own partials (`clause_simulation`): how much sooner
  each word's translation would show, and the calls it would add;
- arms: `local` (the bundled 1.5B, sharing the 2 cores with the recognizer) and `fast` (the scripted endpoint of
  the tests answering after a fixed `--fast-delay-s`: what a hosted model's latency gives).

    python -m benchmarks.translation [--arms local,fast] [--languages de,zh] [--fast-delay-s 0.4]

Writes benchmarks/results/translation.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS, dev_lecture, environment, write_json
from benchmarks.stream import measure, play
from benchmarks.truth import lecture_truth
from realtime.client import listen
from testbed.server import Server

CLAUSE_END = re.compile(r"[,;:.!?]$")
MIN_CLAUSE_WORDS = 4  # a clause shorter than this waits for more words


def clause_simulation(speaker: list[dict], arrived: dict[int, float], delay_s: float) -> dict[str, Any]:
    """Would translating committed clauses before their final help, and what would it cost? Replays the speaker's
    own partials: whenever an utterance's committed words end at a clause mark (`,;:.!?`) at least
    MIN_CLAUSE_WORDS after the last cut, a clause translation is issued, visible `delay_s` later (the arm's
    measured final -> translation median); the final is still translated whole, as now (`arrived`: final id ->
    when its translation reached the viewer, audio clock). Per word of each final (Whisper's word end): when its
    meaning first shows in the viewer's language, now and with clauses; and the calls that adds."""
    cuts: dict[int, list[tuple[int, float]]] = {}  # utterance -> (words covered, when visible)
    for e in speaker:
        if e["type"] != "partial" or not e["committed"]:
            continue
        words = e["committed"].split()
        done = cuts.setdefault(e["utterance"], [])
        covered = done[-1][0] if done else 0
        if len(words) - covered >= MIN_CLAUSE_WORDS and CLAUSE_END.search(words[-1]):
            done.append((len(words), e["t"] + delay_s))
    now, early, calls = [], [], 0
    finals = [e for e in speaker if e["type"] == "final" and e["id"] in arrived]
    for f in finals:
        own = [c for c in cuts.get(f["utterance"], []) if c[1] < arrived[f["id"]]]
        calls += len(own)
        for i, w in enumerate(f["words"]):
            shown = next((t for n, t in own if n > i), arrived[f["id"]])
            now.append(arrived[f["id"]] - w["end"])
            early.append(min(shown, arrived[f["id"]]) - w["end"])

    def dist(xs: list[float]) -> dict[str, float]:
        xs = sorted(xs)
        return {"median": round(statistics.median(xs), 2), "p95": round(xs[int(0.95 * (len(xs) - 1))], 2)} \
            if xs else {}

    return {"word_end_to_translation_s": dist(now), "with_clauses_s": dist(early), "finals": len(finals),
            "clause_calls": calls, "extra_calls_ratio": round(calls / max(1, len(finals)), 2),
            "words_shown_earlier": sum(a < b - 1e-6 for a, b in zip(early, now, strict=True)), "words": len(now),
            "assumed_clause_delay_s": delay_s}


async def translated_run(server: Server, bench, truth, room: str, languages: list[str], drain_s: float
                         ) -> dict[str, Any]:
    """One streamed run with a viewer per language; waits (up to `drain_s`) for the translations to catch up."""
    got: dict[str, list[dict]] = {lang: [] for lang in languages}
    clock: list[float] = []  # the speaker's t0 on our monotonic clock (its events' `t` is audio time at 1.0x)

    def stamp(lang: str) -> Any:
        return lambda e: got[lang].append({**e, "mono": time.monotonic()})

    def speaker_clock(e: dict) -> None:
        if not clock:
            clock.append(time.monotonic() - e["t"])

    viewers = [asyncio.create_task(listen(server.url, room, translate=lang, on_event=stamp(lang)))
               for lang in languages]
    await asyncio.sleep(0.5)
    started = time.monotonic()
    result = await play(server, bench, room, 1.0, also=speaker_clock)
    ids = {e["id"] for e in result.events if e["type"] == "final"}
    while time.monotonic() - started < bench.audio_s + drain_s:
        if all(ids <= {e["final"] for e in got[lang] if e["type"] == "translation"} for lang in languages):
            break
        await asyncio.sleep(0.5)
    caught_up_s = time.monotonic() - started - bench.audio_s
    for task in viewers:
        task.cancel()
    await asyncio.gather(*viewers, return_exceptions=True)
    report = measure(result.events, bench, truth, 1.0)
    done = {lang: sum(e["type"] == "translation" and e["state"] == "done" for e in got[lang]) for lang in languages}
    arrived = {lang: {e["final"]: e["mono"] - clock[0] for e in got[lang] if e["type"] == "translation"
                      and e["state"] == "done"} for lang in languages}
    return {"latency": report["latency"], "wer": report["wer"], "finals": len(ids), "translated": done,
            "last_translation_after_audio_end_s": round(caught_up_s, 1), "events": result.events,
            "arrived": arrived}


async def arm(name: str, args: argparse.Namespace, bench, truth, tmp: Path) -> dict[str, Any]:
    fake = None
    if name == "local":
        llm = ["--llm-model", "local", "--llm-timeout-s", "240"]
    else:
        from tests.fake_openai import FakeOpenAI

        fake = FakeOpenAI()
        fake.delay_s = args.fast_delay_s
        await fake.start()
        llm = ["--llm-model", "fake", "--llm-base-url", fake.url]
    server = Server([*llm, "--no-notes"], tmp / f"{name}.log")
    try:
        plain = measure((await play(server, bench, f"{name}-plain", 1.0)).events, bench, truth, 1.0)
        languages = args.languages.split(",")
        with_tr = await translated_run(server, bench, truth, f"{name}-translated", languages, args.drain_s)
        health = server.health()["translations"]
        minutes = bench.audio_s / 60
        return {
            "endpoint": "bundled 1.5B (local)" if name == "local" else f"scripted, {args.fast_delay_s} s per answer",
            "languages": languages,
            "captions_without": {"committed": plain["latency"]["committed"], "wer": plain["wer"]},
            "captions_with": {"committed": with_tr["latency"]["committed"], "wer": with_tr["wer"]},
            "ratio_committed_p95_with_to_without": round(with_tr["latency"]["committed"]["p95"]
                                                         / plain["latency"]["committed"]["p95"], 3),
            "final_to_translation_s": health["latency_s"], "failed": health["failed"],
            "translated": with_tr["translated"], "finals": with_tr["finals"],
            "last_translation_after_audio_end_s": with_tr["last_translation_after_audio_end_s"],
            "tokens_per_lecture_minute": {lang: round(n / minutes) for lang, n in
                                          health["tokens_by_language"].items()},
            "clauses": {lang: clause_simulation(with_tr["events"], with_tr["arrived"][lang],
                                                health["latency_s"]["median"]) for lang in languages},
        }
    finally:
        server.stop()
        if fake is not None:
            with contextlib.suppress(Exception):
                await fake.stop()


async def main_async(args: argparse.Namespace) -> int:
    bench = dev_lecture()
    truth = lecture_truth(bench, "base")
    out: dict[str, Any] = {"lecture": bench.name, "audio_s": round(bench.audio_s, 1), "date": time.strftime("%Y-%m-%d"),
                           "env": environment(), "arms": {}}
    with tempfile.TemporaryDirectory(prefix="translation-") as tmp:
        for name in args.arms.split(","):
            out["arms"][name] = await arm(name, args, bench, truth, Path(tmp))
            write_json(RESULTS / "translation.json", out)
            print(name, {k: v for k, v in out["arms"][name].items()}, flush=True)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arms", default="local,fast")
    ap.add_argument("--languages", default="de,zh")
    ap.add_argument("--fast-delay-s", type=float, default=0.4)
    ap.add_argument("--drain-s", type=float, default=600.0, help="longest wait for translations after the audio")
    return asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())
