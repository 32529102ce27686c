"""The study panels in the notes benchmark: what each panel costs and how it changed over the replayed lecture, and
a catch-up asked for at the end (offline, or from the LLM the replay used). With an LLM, the wording of the terms
and tasks (`study_prompt`) is counted too: its calls, tokens per lecture minute and latency.

The panels are made offline after every notes update (`notes.study`); here each panel's engine is timed again on
the whole transcript (the most it costs, at the end of the lecture: median of 3 runs), and the replay's `panel`
events give its versions and items. The catch-up is one recap through the service (`catchup_live`), timed from
the request to its last piece, with the LLM tokens it cost.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from realtime.core.protocol import Final
from realtime.core.room import Room
from realtime.notes.outline import offline_outline
from realtime.notes.service import NotesService
from realtime.notes.tasks import offline_tasks
from realtime.notes.terms import offline_terms

ENGINES = {"terms": lambda finals, glossary: offline_terms(finals, glossary),
           "tasks": lambda finals, glossary: offline_tasks(finals),
           "outline": lambda finals, glossary: offline_outline(finals)}


def _timed(fn: Any, *args: Any, runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - started)
    return round(statistics.median(times), 4)


async def measure(service: NotesService, room: Room, events: list[dict[str, Any]]) -> dict[str, Any]:
    finals: list[Final] = list(room.finals)
    lecture_min = finals[-1].end / 60.0 if finals else 1.0
    panels = {}
    for name, engine in ENGINES.items():
        mine = events_of(events, name)
        items = mine[-1]["items"] if mine else []
        panels[name] = {"offline_s": _timed(engine, finals, room.glossary), "versions": len(mine),
                        "items": len(items), "tokens_per_min": 0.0,
                        "sample": [i.get("term") or i.get("title") or i.get("text") for i in items[:8]],
                        "last_items": items}
    study = service.panels
    wording = {"calls": study.calls, "tokens": study.tokens, "failures": study.failures, "truncated": study.truncated,
               "tokens_per_min": round(study.tokens / lecture_min, 1),
               "latency_s": {"median": round(statistics.median(study.latencies), 3),
                             "max": round(max(study.latencies), 3)} if study.latencies else None}
    for name in ("terms", "tasks"):
        panels[name]["worded"] = sum(1 for i in (events_of(events, name)[-1:] or [{"items": []}])[0]["items"]
                                     if i.get("said"))
    usage = getattr(service.llm, "usage", None)
    before = (getattr(usage, "prompt_tokens", 0), getattr(usage, "completion_tokens", 0))
    started = time.perf_counter()
    recap, _ = service.catchups.get(room)
    pieces = [piece async for piece in recap.follow()]
    took = time.perf_counter() - started
    prompt = getattr(usage, "prompt_tokens", 0) - before[0]
    completion = getattr(usage, "completion_tokens", 0) - before[1]
    catchup = {"latency_s": round(took, 3), "source": recap.source, "pieces": len(pieces),
               "prompt_tokens": prompt, "completion_tokens": completion, "chars": len(recap.markdown),
               # one recap per room per 30 s at most, however many ask: the ceiling per lecture minute
               "max_tokens_per_min": round((prompt + completion) * 60.0 / service.catchups.ttl_s, 1),
               "markdown": recap.markdown}
    return {"panels": panels, "wording": wording, "catchup": catchup, "lecture_min": round(lecture_min, 2)}


def events_of(events: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in events if e["panel"] == name]


def print_study(study: dict[str, Any]) -> None:
    for name, p in study["panels"].items():
        print(f"  panel {name}: {p['items']} items, {p['versions']} versions, offline {p['offline_s'] * 1000:.0f} ms "
              f"on the whole transcript, 0 tokens; e.g. {p['sample'][:5]}")
    w = study["wording"]
    if w["calls"] or w["failures"]:
        print(f"  LLM wording of terms and tasks: {w['calls']} calls ({w['failures']} failed, "
              f"{w['truncated']} cut off), {w['tokens']} tokens "
              f"({w['tokens_per_min']}/lecture min), latency {w['latency_s']}; worded "
              f"{study['panels']['terms']['worded']} terms, {study['panels']['tasks']['worded']} tasks")
    c = study["catchup"]
    print(f"  catch-up: {c['source']} in {c['latency_s']} s, {c['pieces']} pieces, tokens {c['prompt_tokens']} + "
          f"{c['completion_tokens']} (at most {c['max_tokens_per_min']}/lecture min, one recap per 30 s)")
