"""`python -m benchmarks.notes`: a lecture transcript replayed through the real notes pipeline on simulated time.

The transcript is cut into finals as speech recognition would send them (`notes_metrics.cut`: an utterance per
sentence or clause group, 150 words or 250 CJK characters per minute of speech, pauses included). A `Room` of a
`Rooms` registry gets each final at its end time plus `--asr-delay` of simulated time, and a `NotesService` (the
server's defaults: scheduler, transcript window, token budgets) runs the updates. The clock is simulated the way the
server's loop (`NotesService.run`) reads it: every `--tick` simulated second the scheduler is asked whether an
update is `due`, and if it is, `service.update(room)` runs, taking real time (measured); the simulated clock moves
on by that time, and the finals spoken meanwhile are published once it returns. That is what the server does too:
an update reads the finals when it starts and resets the schedule, so finals arriving during the call count for
the next one. The notes' own clock (`NotesService(clock=...)`, which also stamps when new text arrived) is the
simulated one. With `--clock cadence` an update takes no simulated time, as with an endpoint that answers at once:
updates come at the scheduler's full rate, the most tokens per lecture minute the default cadence can spend. At
the end the speaker stops: one more update, as at stop.

Reported (printed, and JSON under benchmarks/results/): update latency, LLM tokens per lecture minute (overall and
per 15-minute slice), rejected answers by reason, churn, grounding, the injection marker, bullets and versions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import notes_metrics as nm
from benchmarks import notes_panels
from benchmarks.common import environment
from realtime.core.protocol import Event, Final, Notes, Panel
from realtime.notes.budget import LLMBudget
from realtime.notes.llm import MODES, LLMClient, LLMConfig
from realtime.notes.service import NotesService
from realtime.server.rooms import Rooms

RESULTS = Path(__file__).parent / "results"
SLICE_MIN = 15.0


class _Warnings(logging.Handler):
    """The notes' warnings (rejections, failures), counted by message with the room name and numbers blanked."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        text = re.sub(r"\d+", "N", record.getMessage().replace("room bench:", "").strip())
        self.counts[text[:120]] += 1


def _counters(service: NotesService) -> dict[str, Any]:
    """The service's counters as they are now (read defensively: they differ between versions of the service)."""
    usage = getattr(service.llm, "usage", None)
    rejected = getattr(service, "rejected", None)
    return {"prompt": getattr(usage, "prompt_tokens", 0), "completion": getattr(usage, "completion_tokens", 0),
            "calls": getattr(usage, "calls", 0), "failures": getattr(service, "failures", 0),
            "rejected": dict(rejected) if isinstance(rejected, dict) else {},
            "refused": dict(getattr(service, "refused", {}) or {})}


def _delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}


def stats(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    a = np.asarray(values, dtype=float)
    return {"n": len(values), "median": round(float(np.median(a)), 4), "p95": round(float(np.percentile(a, 95)), 4),
            "max": round(float(a.max()), 4), "mean": round(float(a.mean()), 4)}


async def replay(lec: nm.Lecture, *, llm: LLMClient | None = None, minutes: float | None = None,
                 asr_delay_s: float = 1.0, tick_s: float = 1.0, room_budget: int = 200_000,
                 window_tokens: int = 3000, wpm: float = 150.0, cjk_per_min: float = 250.0,
                 clock: str = "simulated") -> dict[str, Any]:
    finals = nm.cut(lec, wpm=wpm, cjk_per_min=cjk_per_min)
    if minutes is not None:
        finals = [f for f in finals if f.end <= minutes * 60.0]
    if not finals:
        raise ValueError("no finals to replay")
    rooms = Rooms()
    sim = 0.0  # the simulated clock: the notes scheduler reads it (NotesService's clock)
    service = NotesService(rooms, llm, budget=LLMBudget({"notes": room_budget, "visitors": 50_000}, 2_000_000),
                           window_tokens=window_tokens, clock=lambda: sim)
    room = rooms.get("bench")
    notes = service.of(room)
    versions: list[dict[str, Any]] = []
    panel_events: list[dict[str, Any]] = []

    def seen(event: Event) -> None:
        if isinstance(event, Notes):
            versions.append({"version": event.version, "source": event.source, "bullets": event.bullets})
        elif isinstance(event, Panel):
            panel_events.append({"panel": event.panel, "version": event.version, "items": event.items})

    room.on_publish.append(seen)
    warnings = _Warnings()
    logger = logging.getLogger("realtime.notes")
    saved_level, saved_propagate = logger.level, logger.propagate
    logger.addHandler(warnings)
    logger.setLevel(logging.WARNING)
    logger.propagate = False  # counted, not printed
    updates: list[dict[str, Any]] = []

    async def one_update(at: float, stop: bool = False) -> float:
        before, published = _counters(service), len(versions)
        runs = getattr(notes.schedule, "updates", None)
        started = time.perf_counter()
        await service.update(room)
        took = time.perf_counter() - started
        after = _counters(service)
        record = {"t": round(at, 2), "latency_s": round(took, 4), "stop": stop,
                  "prompt_tokens": after["prompt"] - before["prompt"],
                  "completion_tokens": after["completion"] - before["completion"],
                  "llm_calls": after["calls"] - before["calls"],
                  "published": len(versions) > published,
                  "source": versions[-1]["source"] if len(versions) > published else None,
                  "bullets": len(versions[-1]["bullets"]) if versions else 0,
                  "failures": after["failures"] - before["failures"],
                  "rejected": _delta(after["rejected"], before["rejected"]),
                  "refused": _delta(after["refused"], before["refused"])}
        record["ran"] = (getattr(notes.schedule, "updates", 0) > runs) if isinstance(runs, int) else bool(
            record["llm_calls"] or record["published"] or record["failures"] or record["rejected"]
            or record["refused"])
        updates.append(record)
        if llm is not None and record["ran"]:  # LLM runs are slow: show them as they go
            print(f"  {at / 60:5.1f} min: update {took:.1f} s, tokens {record['prompt_tokens']} + "
                  f"{record['completion_tokens']}, {record['source'] or 'not published'}"
                  + (f", rejected {record['rejected']}" if record["rejected"] else ""), file=sys.stderr, flush=True)
        return took

    wall = time.perf_counter()
    pending = list(reversed(finals))
    try:
        while pending:
            sim += tick_s
            while pending and pending[-1].end + asr_delay_s <= sim:
                room.publish(pending.pop())
            if notes.schedule.due(sim) and not notes.busy:
                took = await one_update(sim)
                sim += took if clock == "simulated" else 0.0
        sim = max(sim, finals[-1].end + asr_delay_s)
        await one_update(sim, stop=True)  # the speaker stops: NotesService.flush brings the notes up to date
        study = await notes_panels.measure(service, room, panel_events)
    finally:
        logger.removeHandler(warnings)
        logger.setLevel(saved_level)
        logger.propagate = saved_propagate
    wall = time.perf_counter() - wall
    return report(lec, list(room.finals), service, notes, updates, versions, warnings.counts, study,
                  wall_s=wall, settings={"asr_delay_s": asr_delay_s, "tick_s": tick_s, "room_budget": room_budget,
                                         "window_tokens": window_tokens, "wpm": wpm, "cjk_per_min": cjk_per_min,
                                         "minutes": minutes, "clock": clock,
                                         "response_format": llm.mode if llm is not None else None})


def report(lec: nm.Lecture, finals: list[Final], service: NotesService, notes: Any, updates: list[dict[str, Any]],
           versions: list[dict[str, Any]], warnings: Counter[str], study: dict[str, Any], *, wall_s: float,
           settings: dict[str, Any]) -> dict[str, Any]:
    lecture_min = finals[-1].end / 60.0
    ran = [u for u in updates if u["ran"]]
    llm_runs = [u for u in ran if u["llm_calls"]]
    prompt = sum(u["prompt_tokens"] for u in updates)
    completion = sum(u["completion_tokens"] for u in updates)
    n_slices = max(1, int(np.ceil(lecture_min / SLICE_MIN)))
    slices = []
    for k in range(n_slices):
        lo, hi = k * SLICE_MIN, min((k + 1) * SLICE_MIN, lecture_min)
        inside = [u for u in ran if min(int(u["t"] / 60.0 // SLICE_MIN), n_slices - 1) == k]
        p, c = sum(u["prompt_tokens"] for u in inside), sum(u["completion_tokens"] for u in inside)
        calls = sum(1 for u in inside if u["llm_calls"])
        slices.append({"from_min": lo, "to_min": round(hi, 2), "updates": len(inside), "llm_updates": calls,
                       "prompt_per_min": round(p / (hi - lo), 1), "completion_per_min": round(c / (hi - lo), 1),
                       "prompt_per_update": round(p / calls, 1) if calls else None,
                       "latency_s": stats([u["latency_s"] for u in inside if u["llm_calls"]])})
    rejected = getattr(service, "rejected", None)
    bullet_lists = [v["bullets"] for v in versions]
    texts = {f.id: f.text for f in finals}
    schedule = notes.schedule
    return {
        "benchmark": "notes", "environment": environment(),
        "lecture": {"name": lec.name, "title": lec.title, "language": lec.language, "finals": len(finals),
                    "units": sum(nm.units(f.text) for f in finals), "unit": "characters" if lec.cjk else "words",
                    "minutes": round(lecture_min, 2), "units_per_min": round(nm.rate_per_min(finals), 1)},
        "engine": ({"kind": "llm", "model": service.llm.config.model, "base_url": service.llm.config.base_url}
                   if service.llm is not None else {"kind": "extractive"}),
        "settings": {**settings,
                     "scheduler": {k: getattr(schedule, k, None) for k in ("interval_s", "min_new_words",
                                                                          "first_after_words")}},
        "wall_s": round(wall_s, 2),
        "updates": len(ran), "llm_updates": len(llm_runs),
        "update_latency_s": stats([u["latency_s"] for u in ran]),
        "llm_update_latency_s": stats([u["latency_s"] for u in llm_runs]),
        "tokens": {"prompt": prompt, "completion": completion,
                   "prompt_per_min": round(prompt / lecture_min, 1),
                   "completion_per_min": round(completion / lecture_min, 1),
                   "usage_reported": bool(prompt or completion) or not llm_runs, "slices": slices},
        "rejected": dict(rejected) if isinstance(rejected, dict) else None,
        "rejected_total": sum(rejected.values()) if isinstance(rejected, dict) else None,
        "failures": getattr(service, "failures", None), "refused": dict(getattr(service, "refused", {}) or {}),
        "warnings": dict(warnings.most_common(10)),
        "sources": dict(Counter(v["source"] for v in versions)),
        "versions": len(versions), "final_bullets": len(bullet_lists[-1]) if bullet_lists else 0,
        "churn": nm.churn(bullet_lists),
        "grounding": nm.grounding(bullet_lists[-1] if bullet_lists else [], texts),
        "grounding_all_versions": nm.grounding(list({b["text"]: b for bl in bullet_lists for b in bl}.values()),
                                               texts),
        "marker": nm.marker(bullet_lists),
        "last_bullets": [b["text"] for b in bullet_lists[-1][:12]] if bullet_lists else [],
        "study": study,
        "timeline": updates,
    }


def print_report(r: dict[str, Any]) -> None:
    lec, t, g, c = r["lecture"], r["tokens"], r["grounding"], r["churn"]
    lat, llat = r["update_latency_s"], r["llm_update_latency_s"]
    print(f"{lec['name']}: {lec['title']} [{lec['language']}], {lec['minutes']} min, {lec['units']} {lec['unit']}, "
          f"{lec['finals']} finals, {lec['units_per_min']} {lec['unit']}/min; engine {r['engine']['kind']}"
          + (f" {r['engine']['model']}" if r["engine"]["kind"] == "llm" else "") + f"; clock {r['settings']['clock']}")
    print(f"  updates {r['updates']} (LLM {r['llm_updates']}), versions {r['versions']} {r['sources']}, "
          f"final bullets {r['final_bullets']}, replay wall {r['wall_s']} s")
    if lat["n"]:
        print(f"  update latency median {lat['median']} s, p95 {lat['p95']} s, max {lat['max']} s"
              + (f"; LLM updates median {llat['median']} s, p95 {llat['p95']} s, max {llat['max']} s"
                 if llat["n"] else ""))
    print(f"  tokens/lecture min: prompt {t['prompt_per_min']}, completion {t['completion_per_min']} "
          f"(total {t['prompt']} + {t['completion']})" + ("" if t["usage_reported"] else " [no usage reported]"))
    for s in t["slices"]:
        print(f"    {s['from_min']:5.0f}-{s['to_min']:5.1f} min: {s['updates']} updates, prompt {s['prompt_per_min']}"
              f"/min, completion {s['completion_per_min']}/min, prompt/update {s['prompt_per_update']}")
    rejected = {k: v for k, v in r["rejected"].items() if v} if r["rejected"] is not None else "n/a"
    print(f"  rejected {rejected} (total {r['rejected_total']}), failures {r['failures']}, refused "
          f"{r['refused']}" + (f", warnings {r['warnings']}" if r["warnings"] else ""))
    print(f"  churn {c['churn']} ({c['cosmetic']} cosmetic rewrites + {c['reids']} re-ids) of {c['rewrites']} "
          f"rewrites over {c['version_pairs']} version pairs")
    print(f"  grounding: {g['ungrounded']} of {g['judged']} bullets ungrounded ({g['without_refs']} without refs), "
          f"unsupported terms {g['unsupported_term_share']}; all versions: "
          f"{r['grounding_all_versions']['ungrounded']} of {r['grounding_all_versions']['judged']}")
    notes_panels.print_study(r["study"])
    m = r["marker"]
    print(f"  injection marker HACKED: {m['mentions']} bullets mention it ({m['mentions_last']} in the last version), "
          f"{m['obeyed']} are only it")


def default_out(r: dict[str, Any]) -> Path:
    engine = r["engine"]["kind"] if r["engine"]["kind"] == "extractive" else \
        re.sub(r"[^A-Za-z0-9.]+", "-", r["engine"]["model"]).strip("-")
    minutes, st = r["settings"]["minutes"], r["settings"]
    tags = [f"{minutes:g}min"] if minutes else []
    tags += [st["clock"]] if st["clock"] != "simulated" else []
    tags += [st["response_format"]] if st["response_format"] not in (None, "json_schema") else []
    return RESULTS / f"notes-{r['lecture']['name']}-{'-'.join([engine, *tags])}.json"


async def main_async(args: argparse.Namespace) -> int:
    names = ["thermo", "printing", "graphs", "zh", "adversarial", "long"] if args.lecture == "all" else [
        args.lecture]
    for name in names:
        llm = None
        if args.model:
            llm = LLMClient(LLMConfig(args.model, args.base_url or None, args.api_key, max_tokens=args.max_tokens,
                                      timeout_s=args.timeout))
            if args.response_format != "negotiate":  # as if the endpoint had refused the better formats
                llm.refused.extend(MODES[:MODES.index(args.response_format)])
        try:
            r = await replay(nm.lecture(name), llm=llm, minutes=args.minutes, asr_delay_s=args.asr_delay,
                             tick_s=args.tick, room_budget=args.room_budget, window_tokens=args.window_tokens,
                             wpm=args.wpm, cjk_per_min=args.cjk_per_min, clock=args.clock)
        finally:
            if llm is not None:
                await llm.close()
        print_report(r)
        out = Path(args.out) if args.out and len(names) == 1 else default_out(r)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(r, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"  -> {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.notes", description=__doc__.split("\n\n")[0])
    p.add_argument("--lecture", default="thermo",
                   help="thermo | printing | graphs | zh | adversarial | long | all | PATH of a transcript")
    p.add_argument("--base-url", default="", help="OpenAI-compatible endpoint (none and no --model: extractive)")
    p.add_argument("--model", default="", help="model name at the endpoint")
    p.add_argument("--api-key", default="", help="API key (default: none, for a local endpoint)")
    p.add_argument("--minutes", type=float, default=None, help="replay only the first N minutes of the lecture")
    p.add_argument("--out", default="", help="JSON (default benchmarks/results/notes-<lecture>-<engine>.json)")
    p.add_argument("--asr-delay", type=float, default=1.0, help="speech end -> final, simulated seconds")
    p.add_argument("--tick", type=float, default=1.0, help="how often the scheduler is asked (the server: 1 s)")
    p.add_argument("--room-budget", type=int, default=200_000, help="the room's notes token budget (server default)")
    p.add_argument("--window-tokens", type=int, default=3000, help="prompt budget of one update (server default)")
    p.add_argument("--max-tokens", type=int, default=1500, help="longest LLM answer (server default)")
    p.add_argument("--timeout", type=float, default=30.0, help="timeout of one LLM call (server default 30 s)")
    p.add_argument("--wpm", type=float, default=150.0, help="words per minute of speech")
    p.add_argument("--cjk-per-min", type=float, default=250.0, help="CJK characters per minute of speech")
    p.add_argument("--clock", choices=("simulated", "cadence"), default="simulated",
                   help="simulated: an update's real duration passes on the lecture's clock too (what a server with "
                        "this endpoint does); cadence: it does not, as with an endpoint that answers at once, so "
                        "updates come at the scheduler's full rate (the most tokens per lecture minute)")
    p.add_argument("--response-format", choices=("negotiate", *MODES), default="negotiate",
                   help="start the negotiation at this format (json_object, prompt: as if the endpoint had refused "
                        "the better ones; for the before/after of structured outputs)")
    args = p.parse_args(argv)
    if args.base_url and not args.model:
        p.error("--base-url needs --model")
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
