"""The Prometheus series of a running server, gathered from where the work is counted (engine, rooms, notes,
socket layer) at scrape time."""

from __future__ import annotations

import asyncio
import os
import sys

from aiohttp import web

from realtime.appkeys import ENGINE, NOTES, ROOMS, STATS
from realtime.metrics import Family, counter, gauge


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
    llm = notes.llm.usage if notes.llm else None
    tokens = counter("realtime_llm_tokens_total", "LLM tokens spent, by kind.")
    tokens.add(llm.prompt_tokens if llm else 0, kind="prompt").add(llm.completion_tokens if llm else 0,
                                                                     kind="completion")
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
        counter("realtime_llm_calls_total", "LLM calls made.", llm.calls if llm else 0),
        counter("realtime_llm_errors_total", "LLM calls that failed.", llm.errors if llm else 0),
        tokens,
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
