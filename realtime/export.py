"""A finished (or running) lecture as downloadable files: transcript, subtitles, JSON and Markdown notes (sans-I/O).

Everything here takes the plain values the server already keeps (the "final" dicts it publishes, the notes bullets,
the summary Markdown) and returns the text of a file; the HTTP layer picks a format from `FORMATS` and sends the
string. Subtitles follow common subtitling practice (at most 2 lines of 42 characters and 7 s per cue, no overlaps,
a minimum display time) because a transcript segment from Whisper is often far too long to be one readable cue.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from realtime.commit import attaches

MAX_LINE = 42  # characters per subtitle line
MAX_LINES = 2  # lines per cue
MAX_CUE_S = 7.0  # longest time a cue stays on screen
MIN_CUE_S = 0.3  # shortest, where the next cue leaves room
MAX_PAUSE_S = 1.5  # a pause this long inside a final starts a new cue: no text on screen during silence
PARAGRAPH_GAP_S = 2.0  # silence between finals that starts a new paragraph in the plain transcript

FORMATS: dict[str, tuple[str, str]] = {  # format name -> (media type, file extension)
    "txt": ("text/plain", "txt"),
    "srt": ("application/x-subrip", "srt"),
    "vtt": ("text/vtt", "vtt"),
    "json": ("application/json", "json"),
    "md": ("text/markdown", "md"),
}

Final = Mapping[str, Any]


@dataclass(frozen=True)
class _Unit:
    """Text that must not be split across lines or cues (a word, or glued pieces of one), with its times."""

    text: str
    start: float
    end: float
    space: bool  # separated from the previous unit by a space (False inside unspaced scripts such as Chinese)


@dataclass(frozen=True)
class Cue:
    start_ms: int
    end_ms: int
    lines: tuple[str, ...]


def _units(final: Final) -> list[_Unit]:
    """The final's words as unbreakable units; without word times, times are spread over the text by length."""
    start, end = float(final["start"]), float(final["end"])
    words = [w for w in final.get("words") or [] if str(w.get("w", "")).strip()]
    if not words:
        tokens = str(final.get("text") or "").split()
        total = sum(len(t) + 1 for t in tokens) - 1
        units, pos = [], 0
        for t in tokens:
            a, b = pos / total, (pos + len(t)) / total
            units.append(_Unit(t, start + a * (end - start), start + b * (end - start), True))
            pos += len(t) + 1
        return units
    units = []
    for w in words:
        text = " ".join(str(w["w"]).split())
        glued = bool(units) and attaches(units[-1].text, text)  # the rule the final's text was joined by
        t0, t1 = min(max(float(w["start"]), start), end), min(max(float(w["end"]), start), end)
        if glued and len(units[-1].text) + len(text) <= MAX_LINE:  # "word" + ",", "(" + "word"
            last = units[-1]
            units[-1] = _Unit(last.text + text, last.start, max(last.end, t1), last.space)
        else:  # a glued piece that would make an over-long line becomes a unit of its own, joined without a space
            units.append(_Unit(text, t0, max(t0, t1), not glued))
    return units


def _layout(units: Sequence[_Unit]) -> list[str] | None:
    """The units wrapped into at most two balanced lines, or None when they do not fit."""
    one, cuts = "", []  # cuts: where each unit after the first begins in `one`, and whether a space precedes it
    for i, u in enumerate(units):
        if i:
            cuts.append((len(one), u.space))
            one += " " if u.space else ""
        one += u.text
    if len(one) <= MAX_LINE or len(units) == 1:  # a single over-long word gets a line of its own
        return [one]
    best: tuple[tuple[int, bool], list[str]] | None = None
    for k, (pos, space) in enumerate(cuts, 1):
        top, bottom = one[:pos], one[pos + space:]
        if (len(top) <= MAX_LINE or k == 1) and (len(bottom) <= MAX_LINE or k == len(units) - 1):
            score = (max(len(top), len(bottom)), len(top) > len(bottom))  # balanced; bottom-heavy on a tie
            if best is None or score < best[0]:
                best = (score, [top, bottom])
    return best[1] if best else None


def _final_cues(final: Final) -> list[tuple[float, float, list[str]]]:
    """One final split into the fewest, most even cues that respect the line, length and pause limits.

    Dynamic programming over cue boundaries (like line breaking in typesetting): each cue costs a constant plus its
    squared unused room, and a cue that ends a sentence costs less, so a short last cue with one word is avoided.
    """
    units = _units(final)
    n = len(units)
    best: list[tuple[float, int, list[str]]] = [(0.0, 0, [])] + [(float("inf"), 0, [])] * n  # (cost, from, lines)
    for i in range(n):
        if best[i][0] == float("inf"):
            continue
        for j in range(i + 1, n + 1):
            last = units[j - 1]
            if j - i > 1 and (last.end - units[i].start > MAX_CUE_S or last.start - units[j - 2].end >= MAX_PAUSE_S):
                break  # every longer cue would break the same limit
            lines = _layout(units[i:j])
            if lines is None:
                break
            slack = max(0, MAX_LINES * MAX_LINE - sum(map(len, lines)))
            cost = best[i][0] + 10_000 + slack**2 - (3_000 if last.text[-1] in ".?!" else 0)
            if cost < best[j][0]:
                best[j] = (cost, i, lines)
    out: list[tuple[float, float, list[str]]] = []
    j = n
    while j:
        _, i, lines = best[j]
        out.append((units[i].start, units[j - 1].end, lines))
        j = i
    return out[::-1]


def _ms(seconds: float) -> int:
    return max(0, round(seconds * 1000))


def cues(finals: Iterable[Final]) -> list[Cue]:
    """All subtitle cues in time order, in whole milliseconds so rounding can never create an overlap.

    A cue shorter than MIN_CUE_S is lengthened into the silence after it (possibly past its final's end) but never
    into the next cue; a cue is cut at MAX_CUE_S even when one long word would keep it longer.
    """
    raw = sorted(((_ms(a), _ms(b), tuple(lines)) for f in finals for a, b, lines in _final_cues(f)),
                 key=lambda c: c[0])
    out = []
    for i, (start, end, lines) in enumerate(raw):
        end = min(max(end, start + round(MIN_CUE_S * 1000)), start + round(MAX_CUE_S * 1000))
        if i + 1 < len(raw):
            end = min(end, raw[i + 1][0])
        out.append(Cue(start, max(start, end), lines))
    return out


def _stamp(ms: int, sep: str) -> str:
    s, ms = divmod(ms, 1000)
    m, s = divmod(s, 60)
    h, m = divmod(m, 60)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def to_srt(finals: Iterable[Final]) -> str:
    """SubRip subtitles, numbered from 1; "" for an empty transcript."""
    return "".join(f"{i}\n{_stamp(c.start_ms, ',')} --> {_stamp(c.end_ms, ',')}\n" + "\n".join(c.lines) + "\n\n"
                   for i, c in enumerate(cues(finals), 1))


def _vtt_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_vtt(finals: Iterable[Final]) -> str:
    """WebVTT subtitles for the browser's <track>; text is escaped because "<" would start a cue tag."""
    body = "".join(f"{_stamp(c.start_ms, '.')} --> {_stamp(c.end_ms, '.')}\n"
                   + "\n".join(_vtt_escape(line) for line in c.lines) + "\n\n" for c in cues(finals))
    return "WEBVTT\n\n" + body


def to_txt(finals: Iterable[Final]) -> str:
    """The transcript as readable prose: finals run together, a new paragraph after a pause of PARAGRAPH_GAP_S."""
    paragraphs: list[list[str]] = []
    last_end: float | None = None
    for f in finals:
        text = " ".join(str(f.get("text") or "").split())
        if not text:
            continue
        if last_end is None or float(f["start"]) - last_end >= PARAGRAPH_GAP_S:
            paragraphs.append([])
        paragraphs[-1].append(text)
        last_end = float(f["end"])
    return "\n\n".join(" ".join(p) for p in paragraphs) + "\n" if paragraphs else ""


def _bullet(b: Any) -> dict[str, Any]:
    """A bullet as a dict, whether it came as a dict or as a notes.state.Bullet."""
    return dict(b) if isinstance(b, Mapping) else b.to_dict()


def to_json(room: str, title: str, finals: Sequence[Final], notes: Iterable[Any] | None = None,
            summary: str = "") -> str:
    """Everything about the lecture in one machine-readable document (for archives and other tools)."""
    languages = Counter(f.get("language") for f in finals if f.get("language"))
    doc = {
        "room": room,
        "title": title,
        "duration_s": max((float(f["end"]) for f in finals), default=0),
        "language": languages.most_common(1)[0][0] if languages else None,
        "segments": [{"id": f.get("id"), "start": f["start"], "end": f["end"], "text": f.get("text", ""),
                      "language": f.get("language"), "words": [dict(w) for w in f.get("words") or []]}
                     for f in finals],
        "notes": [_bullet(b) for b in notes or []],
        "summary": summary,
    }
    return json.dumps(doc, ensure_ascii=False, indent=1) + "\n"


def clock(seconds: float) -> str:
    """A time stamp as people write it: 12:05, or 1:02:05 past the first hour."""
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m}:{s:02d}"


_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_ATX = re.compile(r"^( {0,3})(#{1,6})(?=\s|$)")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)\s*$")
_PLAIN = re.compile(r"^ {0,3}(?![#>|`~]|[*+-](\s|$)|\d+[.)](\s|$))\S")  # can be a setext heading's text
_CLOSING = re.compile(r"(^|\s+)#+\s*$")  # an ATX heading's optional closing hashes


def demote_headings(markdown: str, top: int) -> str:
    """Shift the headings so the highest one is level `top` (at most level 6); setext headings become ATX."""
    lines = markdown.splitlines()
    found: list[tuple[int, int, str]] = []  # (line index, level, text) of each heading outside code fences
    drop: set[int] = set()
    fenced = False
    for i, line in enumerate(lines):
        if _FENCE.match(line):
            fenced = not fenced
        elif fenced:
            continue
        elif m := _ATX.match(line):
            found.append((i, len(m.group(2)), _CLOSING.sub("", line[m.end():].strip())))
        elif (m := _SETEXT.match(line)) and i and _PLAIN.match(lines[i - 1]) and (i < 2 or not lines[i - 2].strip()):
            found.append((i - 1, 1 if m.group(1)[0] == "=" else 2, lines[i - 1].strip()))
            drop.add(i)
    if found:
        shift = max(0, top - min(level for _, level, _ in found))
        for i, level, text in found:
            lines[i] = "#" * min(6, level + shift) + (" " + text if text else "")
    return "\n".join(line for i, line in enumerate(lines) if i not in drop)


def _note_lines(bullets: list[dict[str, Any]], starts: Mapping[Any, float]) -> list[str]:
    """Bullets as a nested Markdown list: each bullet followed by its children, in list order."""
    ids = {b.get("id") for b in bullets}
    children: dict[Any, list[dict[str, Any]]] = {}
    for b in bullets:
        parent = b.get("parent")
        children.setdefault(parent if parent in ids and parent != b.get("id") else None, []).append(b)
    out: list[str] = []
    done: set[int] = set()

    def emit(b: dict[str, Any], depth: int) -> None:
        if id(b) in done:  # a parent cycle: show each bullet once
            return
        done.add(id(b))
        pad = "  " * depth
        ref = next((starts[r] for r in b.get("refs") or [] if r in starts), None)
        text = str(b.get("text", "")).strip().replace("\n", "\n" + pad + "  ")
        out.append(f"{pad}- {text}" + (f" _({clock(ref)})_" if ref is not None else ""))
        for child in children.get(b.get("id"), []):
            emit(child, depth + 1)

    for b in children.get(None, []) + bullets:  # roots first; bullets only reachable through a cycle at the end
        emit(b, 0)
    return out


def to_markdown(title: str, notes: Iterable[Any] | None, summary: str, finals: Iterable[Final] | None = None) -> str:
    """The notes and summary as one Markdown document; bullets link back to the lecture time they came from."""
    bullets = [_bullet(b) for b in notes or []]
    starts = {f.get("id"): float(f["start"]) for f in finals or []}
    lines = [f"# {' '.join(title.split()) or 'Lecture notes'}", "", "## Notes", ""]
    lines += _note_lines(bullets, starts) if bullets else ["_No notes were taken._"]
    if summary.strip():
        lines += ["", "## Summary", "", demote_headings(summary.strip(), 3)]
    return "\n".join(lines) + "\n"
