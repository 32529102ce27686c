"""Health and metrics of a running server: `/healthz` and the Prometheus series of `/metrics`, gathered from where
the work is counted (engine, rooms, notes, socket layer) at scrape time.

Anyone may ask whether the server is alive and ready (`{"status", "ready"}`); the details and the metrics name
rooms, private ones included, so they are for the admin key, for `--metrics-port` (loopback, no key), and — on a
quick start that has no admin key — for requests from the machine itself.
"""

from __future__ import annotations

import asyncio
import math
import os
import sys
import time
from collections.abc import Iterable

from aiohttp import web

from realtime import PROTOCOL_VERSION, __version__
from realtime.core.prometheus import CONTENT_TYPE, Family, counter, gauge, render
from realtime.core.protocol import KEY_REQUIRED
from realtime.notes.service import NotesService
from realtime.notes.translate import REASONS, Translations
from realtime.server.appkeys import (
    ENGINE,
    GATE,
    LOCAL_LLM,
    MONITOR,
    NOTES,
    OFFLOAD,
    ROOMS,
    STARTED,
    STATS,
    TRANSLATIONS,
)
from realtime.server.http_common import admin_refusal, error, is_local


def monitor_refusal(request: web.Request) -> web.Response | None:
    """None when this request may see the server's details."""
    if request.app[MONITOR]:
        return None
    if not request.app[GATE].has_admin:
        return None if is_local(request) else error(403, KEY_REQUIRED, "set an admin key (REALTIME_ADMIN_KEY) to "
                                                                       "read this from elsewhere, or --metrics-port")
    return admin_refusal(request)


def collect(app: web.Application) -> list[Family]:
    engine, rooms, stats, notes = app[ENGINE], app[ROOMS], app[STATS], app[NOTES]
    live = list(rooms)
    conns = gauge("realtime_open_connections", "Open WebSocket connections by role.")
    for role in ("speaker", "listener"):
        conns.add(sum(1 for r in live for c in r.connections if c.role == role), role=role)
    opened = counter("realtime_connections_total", "WebSocket connections accepted, by role.")
    for role, n in stats.connections.items():
        opened.add(n, role=role)
    refused = counter("realtime_refused_total", "Connections or starts refused, by error code.")
    for code, n in sorted({**stats.refused, "server_full": engine.stats.refused}.items()):
        refused.add(n, code=code)
    decodes = counter("realtime_decodes_total", "Whisper decodes, by kind.")
    decode_s = counter("realtime_decode_seconds_total", "Time spent decoding, by kind.")
    for kind in ("partial", "final"):
        decodes.add(engine.stats.decodes[kind], kind=kind)
        decode_s.add(round(engine.stats.decode_s[kind], 3), kind=kind)
    lag = gauge("realtime_lag_seconds", "How far each live stream's captions trail its audio.")
    for room, value in engine.lags().items():
        lag.add(value, room=room)
    events = counter("realtime_events_total", "Events published to rooms, by type (partial, final, notes, ...).")
    for kind, n in sorted(rooms.published.items()):
        events.add(n, type=kind)
    rejected = counter("realtime_notes_rejected_total", "LLM notes answers rejected, by reason (not_json, "
                       "bad_structure, unknown_id, bad_refs, length, ...).")
    for reason, n in notes.rejected.items():
        rejected.add(n, reason=reason)
    translations = app[TRANSLATIONS]
    translated = counter("realtime_translations_total", "Caption translations published, by state and reason (failed: "
                         "llm_error, no_budget, invalid_answer).")
    translated.add(translations.translated, state="done")
    for reason in REASONS:
        translated.add(translations.failed[reason], state="failed", reason=reason)
    llm = notes.llm.usage if notes.llm else None
    tokens = counter("realtime_llm_tokens_total", "LLM tokens spent, by kind.")
    tokens.add(llm.prompt_tokens if llm else 0, kind="prompt").add(llm.completion_tokens if llm else 0,
                                                                     kind="completion")
    local = app.get(LOCAL_LLM)  # the managed local model: no samples without one
    local_up = gauge("realtime_local_llm_up", "1 while the managed local LLM answers (--llm-model local), by model.")
    local_restarts = counter("realtime_local_llm_restarts_total", "Times the managed local LLM died and was restarted.")
    if local is not None:
        local_up.add(1 if local.healthy else 0, model=local.name, port=str(local.port))
        local_restarts.add(local.restarts, model=local.name)
    return [
        gauge("realtime_ready", "1 when the model is loaded and the server is not draining.",
              0 if stats.draining else 1),
        gauge("realtime_rooms", "Rooms in memory (in use or recently used).", len(live)),
        gauge("realtime_speakers", "Lectures being transcribed.", engine.speakers),
        gauge("realtime_max_speakers", "Lectures that may be transcribed at once.", engine.max_speakers),
        conns, opened, refused,
        counter("realtime_audio_seconds_total", "Seconds of audio received from speakers.",
                round(stats.audio_in_s, 3)),
        decodes, decode_s,
        counter("realtime_decode_errors_total", "Decodes that failed.", engine.stats.errors),
        gauge("realtime_decode_queue", "Decodes waiting for a worker (finals and due partials).",
              engine.queue_depth),
        gauge("realtime_listener_queue_max", "Longest per-connection outbound queue.",
              max((c.queue.qsize() for r in live for c in r.connections), default=0)),
        lag, events,
        counter("realtime_notes_updates_total", "Notes versions published.", notes.updates),
        counter("realtime_notes_failures_total", "Notes, summary or answer attempts that failed.", notes.failures),
        rejected, translated,
        counter("realtime_llm_calls_total", "LLM calls made.", llm.calls if llm else 0),
        counter("realtime_llm_errors_total", "LLM calls that failed.", llm.errors if llm else 0),
        tokens, local_up, local_restarts,
        counter("realtime_llm_refused_total", "LLM calls not made for want of budget (room pool or daily cap)",
                sum(notes.refused.values())),
        gauge("realtime_llm_waiting", "LLM calls waiting for one of the --llm-concurrency slots.",
              notes.llm.waiting if notes.llm else 0),
        gauge("realtime_offload_waiting", "Exports, retrievals and summaries waiting for the offload thread.",
              app[OFFLOAD].waiting),
        counter("realtime_store_errors_total", "Writes to the store that failed (captions went on).",
                rooms.store_errors + sum(r.store_errors for r in live)),
        gauge("realtime_resident_memory_bytes", "Resident memory of the server process.", _rss_bytes()),
        gauge("realtime_python_heap_blocks", "Memory blocks Python's object allocator holds (objects that leak show "
              "here as growth, whatever the C allocator keeps in its arenas).", sys.getallocatedblocks()),
        gauge("realtime_asyncio_tasks", "Tasks alive on the event loop (a leak shows as growth).",
              len(asyncio.all_tasks())),
    ]


def _rss_bytes() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return float("nan")


async def healthz(request: web.Request) -> web.Response:
    """Liveness (any answer) and readiness (`ready`: model loaded, not draining; `?ready=1` answers 503 when not);
    the details for those who may see them."""
    ready = not request.app[STATS].draining
    status = 503 if request.query.get("ready") and not ready else 200
    if monitor_refusal(request) is not None:
        return web.json_response({"status": "ok" if ready else "draining", "ready": ready}, status=status)
    engine = request.app[ENGINE]
    decoder = engine.decoder
    stats = engine.stats
    rooms = request.app[ROOMS]
    body = {
        "status": "ok" if ready else "draining",
        "ready": ready,
        "version": __version__,
        "protocol": PROTOCOL_VERSION,
        "model": {"name": decoder.name, "path": str(getattr(decoder, "path", "")),
                  "device": getattr(decoder, "device", ""), "compute_type": getattr(decoder, "compute_type", ""),
                  "workers": engine.workers, "cpu_threads": getattr(decoder, "cpu_threads", 0)},
        "uptime_s": round(time.time() - request.app[STARTED], 1),
        "rooms": len(rooms),
        "speakers": engine.speakers,
        "max_speakers": engine.max_speakers,
        "listeners": sum(r.listeners for r in rooms),
        "queue": engine.queue_depth,
        "lag_s": engine.lags(),
        "decodes": stats.decodes,
        "decode_s": {k: round(v, 2) for k, v in stats.decode_s.items()},
        "decode_errors": stats.errors,
        "loop_retries": getattr(decoder, "loop_retries", 0),
        "refused": stats.refused,
        "notes": _notes_health(request.app[NOTES]),
        "translations": _translation_health(request.app[TRANSLATIONS]),
        "local_llm": local.health() if (local := request.app.get(LOCAL_LLM)) is not None else None,
    }
    return web.json_response(body, status=status)


def _quantiles(values: Iterable[float]) -> dict[str, float | int]:
    """n, median, p95 and max of the latest values (nearest rank: no interpolation between two updates)."""
    ordered = sorted(values)
    if not ordered:
        return {"n": 0}

    def rank(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))], 3)

    return {"n": len(ordered), "median": rank(0.5), "p95": rank(0.95), "max": round(ordered[-1], 3)}


def _translation_health(translations: Translations) -> dict:
    return {"available": translations.available, "max_languages": translations.max_languages,
            "translated": translations.translated, "failed": {k: n for k, n in translations.failed.items() if n},
            "latency_s": _quantiles(translations.latencies),
            "tokens_by_language": dict(translations.tokens_by_language)}


def _notes_health(notes: NotesService) -> dict:
    usage = notes.llm.usage if notes.llm else None
    return {"engine": "llm" if notes.llm else "extractive", "updates": notes.updates, "failures": notes.failures,
            "no_budget": dict(notes.refused), "rejected": {k: n for k, n in notes.rejected.items() if n},
            "last_latency_s": round(notes.last_latency_s, 3), "latency_s": _quantiles(notes.latencies),
            "dropped_ops": notes.dropped_ops, "salvaged": notes.salvaged,
            "panels": {"worded_calls": notes.panels.calls, "worded_tokens": notes.panels.tokens,
                       "worded_failures": notes.panels.failures, "worded_truncated": notes.panels.truncated,
                       "worded_latency_s": _quantiles(notes.panels.latencies),
                       "catchups_made": notes.catchups.made, "catchups_served": notes.catchups.served},
            "llm": None if usage is None else {"model": notes.llm.config.model, "calls": usage.calls,
                                               "errors": usage.errors, "prompt_tokens": usage.prompt_tokens,
                                               "completion_tokens": usage.completion_tokens,
                                               "response_format": notes.llm.mode}}


async def metrics(request: web.Request) -> web.Response:
    refusal = monitor_refusal(request)
    if refusal is not None:
        return refusal
    return web.Response(text=render(collect(request.app)), headers={"Content-Type": CONTENT_TYPE})
