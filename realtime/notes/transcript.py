"""`realtime notes TRANSCRIPT`: the live notes, study panels and end-of-lecture summary of a transcript made
elsewhere (a recording transcribed by another tool, or this server's own export), without a server.

The transcript is replayed through the same `NotesService` a live room uses, on the transcript's own clock: its
finals arrive at their end times, each update runs when the scheduler would have run it (every `interval_s` or
`min_new_words`), and a last one when the lecture ends, as at `stop`. So the notes are those a room would have
had, extractive or from the LLM, bounded in cost the same way; then the summary, as `POST …/summary` makes it.
"""

from __future__ import annotations

import json
from typing import Any

from realtime.core.export import clock
from realtime.core.protocol import Final, Summary
from realtime.notes.budget import LLMBudget
from realtime.notes.llm import LLMClient
from realtime.notes.service import NotesService
from realtime.server.rooms import Rooms


async def take_notes(finals: list[Final], llm: LLMClient | None = None, *, name: str = "transcript",
                     language: str = "",
                     glossary: str = "", window_tokens: int = 3000, token_budget: int = 2_000_000,
                     interval_s: float = 60.0, min_new_words: int = 150) -> dict[str, Any]:
    """The notes (bullets as the `notes` event carries them), the study panels (glossary, tasks, outline), the
    summary (Markdown, ending with the panels), where each came from, and the LLM's usage."""
    clock = [0.0]
    rooms = Rooms()
    service = NotesService(rooms, llm, budget=LLMBudget({"notes": token_budget, "visitors": token_budget}, 0),
                           window_tokens=window_tokens, language=language, notes_interval_s=interval_s,
                           notes_min_words=min_new_words, clock=lambda: clock[0])
    room = rooms.get(name)  # the summary's title
    room.glossary = glossary
    notes = service.of(room)
    made: list[str] = []
    room.on_publish.append(lambda e: made.append(e.source) if isinstance(e, Summary) else None)
    for final in finals:
        clock[0] = final.end
        if notes.schedule.due(clock[0]):
            await service.update(room)
        room.publish(final)
    clock[0] = finals[-1].end if finals else 0.0
    await service.update(room)  # the lecture is over: the notes catch up with its end
    summary = await service.summarize(room, "notes")
    bullets = [b.to_dict() for b in notes.state.bullets]
    sources = {"notes": notes.state.source or None, "summary": made[-1] if made else None}
    usage = llm.usage.__dict__ if llm is not None else None
    panels = {name: state.items for name, state in notes.panels.items()}  # also at the summary's end, as Markdown
    return {"finals": len(finals), "bullets": bullets, "panels": panels, "summary": summary, "sources": sources,
            "rejected": {k: v for k, v in service.rejected.items() if v}, "failures": service.failures,
            "llm_usage": usage}


def markdown(result: dict[str, Any], finals: list[Final]) -> str:
    """The notes as the Markdown export shows them (bullets linked to their time), then the summary."""
    at = {f.id: f.start for f in finals}  # parse numbers them from 0, as the room does
    lines = ["# Notes", ""]
    children: dict[str, list[dict]] = {}
    for b in result["bullets"]:
        children.setdefault(b.get("parent") or "", []).append(b)

    def emit(bullet: dict, depth: int) -> None:
        refs = [r for r in bullet.get("refs", []) if r in at]
        stamp = f" [{clock(at[refs[0]])}]" if refs else ""
        lines.append(f"{'  ' * depth}- {bullet['text']}{stamp}")
        for child in children.get(bullet["id"], []):
            emit(child, depth + 1)

    for bullet in children.get("", []):
        emit(bullet, 0)
    return "\n".join(lines) + "\n\n" + result["summary"].strip() + "\n"


def as_json(result: dict[str, Any]) -> str:
    return json.dumps(result, ensure_ascii=False, indent=2) + "\n"


def run_cli(args: Any) -> int:
    """`realtime notes`: read, replay, print (or write `-o`). Exit 2 for a transcript or setting that cannot be
    used, 1 when the LLM could not be started."""
    import asyncio
    import sys
    from pathlib import Path

    from realtime.config import Settings
    from realtime.core.transcript_in import TranscriptError, guess_format, parse
    from realtime.llm.process import LocalLLMError, WeightsError
    from realtime.server.run import build_llm, build_local_llm

    try:
        settings = Settings.from_sources(args=args)
        path = Path(args.transcript)
        text = path.read_text(encoding="utf-8")
        finals = parse(text, args.input_format or guess_format(path.name, text))
    except (OSError, UnicodeDecodeError, TranscriptError, ValueError) as exc:
        print(f"realtime: {args.transcript}: {exc}", file=sys.stderr)
        return 2

    async def go() -> dict[str, Any]:
        local = build_local_llm(settings)
        if local is not None:
            await local.start()
        llm = build_llm(settings, local)
        try:
            return await take_notes(finals, llm, name=path.stem or "transcript", language=settings.notes_language,
                                    glossary=args.glossary,
                                    window_tokens=settings.llm_window_tokens,
                                    interval_s=settings.notes_interval_s, min_new_words=settings.notes_min_words)
        finally:
            if llm is not None:
                await llm.close()
            if local is not None:
                await local.stop()

    try:
        result = asyncio.run(go())
    except (WeightsError, LocalLLMError) as exc:
        print(f"realtime: {exc}", file=sys.stderr)
        return 1
    out = markdown(result, finals) if args.format == "md" else as_json(result)
    if args.output:
        Path(args.output).write_text(out, encoding="utf-8")
    else:
        sys.stdout.write(out)
    return 0
