"""A finished (or running) lecture as downloadable files: transcript, subtitles, JSON and Markdown notes (sans-I/O).

Everything here takes the plain values the server already keeps (the "final" dicts it publishes, the notes bullets,
the summary Markdown) and returns the text of a file; the HTTP layer picks a format from `FORMATS` and sends the
string. Subtitles follow common subtitling practice (at most 2 lines of 42 characters and 7 s per cue, no overlaps,
a minimum display time) because a transcript segment from Whisper is often far too long to be one readable cue.

Cost on 6 hours of finals with word times (5,404 finals, 75,700 words; 2-core Intel Xeon, Python 3.11), before ->
after measuring cue layouts instead of laying every candidate out, and indenting JSON with the C encoder: SRT
1.60 -> 0.51 s, WebVTT 1.54 -> 0.50 s, JSON 0.46 -> 0.24 s (peak 85 -> 39 MiB), text 6 ms, Markdown 1 ms. The
files are byte for byte what they were (tests/core/test_bounded.py checks both against the simple versions).
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain
from json.encoder import encode_basestring  # type: ignore[attr-defined]
from typing import Any, NamedTuple

from realtime.core.agreement import attaches
from realtime.core.protocol import Final

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


class _Unit(NamedTuple):  # a tuple: tens of thousands are made per export, faster than a frozen dataclass
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
    start, end = final.start, final.end
    words = [w for w in final.words if w.w.strip()]
    if not words:
        tokens = final.text.split()
        total = sum(len(t) + 1 for t in tokens) - 1
        units, pos = [], 0
        for t in tokens:
            a, b = pos / total, (pos + len(t)) / total
            units.append(_Unit(t, start + a * (end - start), start + b * (end - start), True))
            pos += len(t) + 1
        return units
    units = []
    for w in words:
        text = " ".join(w.w.split())
        glued = bool(units) and attaches(units[-1].text, text)  # the rule the final's text was joined by
        t0, t1 = min(max(w.start, start), end), min(max(w.end, start), end)
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
    While the programme runs a cue's layout is only measured, its text grown unit by unit from each start (the
    same break `_layout` would choose, found in amortised constant time); the chosen cues are laid out at the end.
    """
    units = _units(final)
    n = len(units)
    t0 = [u.start for u in units]
    t1 = [u.end for u in units]
    size = [len(u.text) for u in units]
    space = [int(u.space) for u in units]
    bonus = [3_000 if u.text[-1] in ".?!" else 0 for u in units]
    room = MAX_LINES * MAX_LINE
    inf = float("inf")
    best: list[tuple[float, int]] = [(0.0, 0)] + [(inf, 0)] * n  # (cost, from)
    for i in range(n):
        base = best[i][0]
        if base == inf:
            continue
        length = size[i]  # of units[i:j] on one line
        # Breaking that line before its k-th unit after the first (k = 1..cuts) gives a top line of pos_k and a bottom
        # line of length - start_k characters (start_k = pos_k + 1 after a space): the top grows and the bottom
        # shrinks with k, so the breaks `_layout` accepts (top within a line unless k = 1, bottom within a line
        # unless k = cuts) form an interval, and its most balanced break is where the top overtakes the bottom (the
        # bottom-heavy one on a tie). Three counts find both as the line grows, without laying it out:
        starts: list[int] = []  # start_k
        twice: list[int] = []  # 2 * pos_k + 1 after a space: top <= bottom iff twice_k <= length
        short_top = 0  # breaks with a top of at most MAX_LINE (a prefix: twice_k <= 2 * MAX_LINE + 1)
        long_bottom = 0  # breaks with a bottom longer than MAX_LINE (a prefix)
        top_first = 0  # breaks with top <= bottom (a prefix)
        for j in range(i + 1, n + 1):
            if j - i > 1:
                if t1[j - 1] - t0[i] > MAX_CUE_S or t0[j - 1] - t1[j - 2] >= MAX_PAUSE_S:
                    break  # every longer cue would break the same limit
                twice.append(2 * length + space[j - 1])
                short_top += twice[-1] <= 2 * MAX_LINE + 1
                length += space[j - 1]
                starts.append(length)
                length += size[j - 1]
            if length <= MAX_LINE or j - i == 1:
                used = length
            else:
                cuts = j - i - 1
                while long_bottom < cuts and length - starts[long_bottom] > MAX_LINE:
                    long_bottom += 1
                while top_first < cuts and twice[top_first] <= length:
                    top_first += 1
                lo, hi = min(cuts, long_bottom + 1), max(1, short_top)
                if lo > hi:
                    break  # no break fits, nor will one in a longer cue
                if top_first < lo:
                    k = lo
                elif top_first >= hi:
                    k = hi
                else:  # top <= bottom at top_first, top > bottom after it: the longer line of each decides
                    k = top_first if length - starts[top_first - 1] <= twice[top_first] // 2 else top_first + 1
                used = length - (twice[k - 1] & 1)  # the space at the break is on neither line
            slack = room - used if used < room else 0
            cost = base + 10_000 + slack * slack - bonus[j - 1]
            if cost < best[j][0]:
                best[j] = (cost, i)
    out: list[tuple[float, float, list[str]]] = []
    j = n
    while j:
        i = best[j][1]
        lines = _layout(units[i:j])
        assert lines is not None
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
        text = " ".join(f.text.split())
        if not text:
            continue
        if last_end is None or f.start - last_end >= PARAGRAPH_GAP_S:
            paragraphs.append([])
        paragraphs[-1].append(text)
        last_end = f.end
    return "\n\n".join(" ".join(p) for p in paragraphs) + "\n" if paragraphs else ""


def _bullet(b: Any) -> dict[str, Any]:
    """A bullet as a dict, whether it came as a dict or as a notes.state.Bullet."""
    return dict(b) if isinstance(b, Mapping) else b.to_dict()


def to_json(room: str, title: str, finals: Sequence[Final], notes: Iterable[Any] | None = None,
            summary: str = "", panels: Mapping[str, list[dict[str, Any]]] | None = None) -> str:
    """Everything about the lecture in one machine-readable document (for archives and other tools)."""
    languages = Counter(f.language for f in finals if f.language)
    doc = {
        "room": room,
        "title": title,
        "duration_s": max((f.end for f in finals), default=0),
        "language": languages.most_common(1)[0][0] if languages else None,
        "segments": [{"id": f.id, "start": f.start, "end": f.end, "text": f.text, "language": f.language,
                      "words": [{"w": w.w, "start": w.start, "end": w.end, "p": w.p} for w in f.words]}
                     for f in finals],
        "notes": [_bullet(b) for b in notes or []],
        "panels": {name: list(items) for name, items in (panels or {}).items()},
        "summary": summary,
    }
    return _indented(doc, 0) + "\n"


_SCALARS = frozenset({str, int, float, bool, type(None)})
_STR, _DICT = frozenset({str}), frozenset({dict})


def _flat_dicts(value: list[Any]) -> bool:
    """Non-empty dicts of str keys and scalar values, all of them (type checks in C: a final's words)."""
    return (_DICT.issuperset(map(type, value)) and all(value) and _STR.issuperset(map(type, chain.from_iterable(value)))
            and _SCALARS.issuperset(map(type, chain.from_iterable(map(dict.values, value)))))


@lru_cache(maxsize=64)
def _encoder(depth: int) -> json.JSONEncoder:
    """Compact JSON (the C encoder) whose item separator breaks the line and indents it to depth + 1."""
    return json.JSONEncoder(ensure_ascii=False, separators=(",\n" + " " * (depth + 1), ": "))


def _scalar(value: Any) -> str:
    if type(value) is str:
        return encode_basestring(value)
    if type(value) is float and math.isfinite(value):
        return float.__repr__(value)
    if type(value) is int:
        return int.__repr__(value)
    return json.dumps(value, ensure_ascii=False)  # true, false, null, NaN, Infinity


def _indented(value: Any, depth: int) -> str:
    """`json.dumps(value, ensure_ascii=False, indent=1)` at `depth` (every line after the first indented `depth`
    more), byte for byte (tested). json's indenting encoder is pure Python: 0.46 s for the word times of a 6-hour
    lecture. Here a dict or list of scalars, or a list of such dicts (a final's words), is encoded by the C encoder in
    one call with an item separator that carries the line break and indent, then its brackets are broken the way
    indent=1 breaks them: a raw line break can only come from a separator, since json escapes it inside strings."""
    t = type(value)
    if t in _SCALARS:
        return _scalar(value)
    pad = "\n" + " " * (depth + 1)
    if t is list and value and _flat_dicts(value):  # [{...}, {...}]: items at depth + 1, their items at depth + 2
        body = _encoder(depth + 1).encode(value)[2:-2]  # without the outer "[{" and "}]"
        inner = pad + " "
        body = body.replace("}," + inner + "{", pad + "}," + pad + "{" + inner)  # between two dicts of the list
        return "[" + pad + "{" + inner + body + pad + "}" + pad[:-1] + "]"
    if (t is dict and value and _STR.issuperset(map(type, value)) and _SCALARS.issuperset(map(type, value.values()))
            or t is list and value and _SCALARS.issuperset(map(type, value))):
        body = _encoder(depth).encode(value)
        return body[0] + pad + body[1:-1] + pad[:-1] + body[-1]
    if t is dict and value and _STR.issuperset(map(type, value)):
        items = ("," + pad).join(encode_basestring(k) + ": " + _indented(v, depth + 1) for k, v in value.items())
        return "{" + pad + items + pad[:-1] + "}"
    if t is list and value:
        return "[" + pad + ("," + pad).join(_indented(v, depth + 1) for v in value) + pad[:-1] + "]"
    return json.dumps(value, ensure_ascii=False, indent=1).replace("\n", "\n" + " " * depth)


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


def to_markdown(title: str, notes: Iterable[Any] | None, summary: str, finals: Iterable[Final] | None = None,
                panels: str = "") -> str:
    """The notes and summary as one Markdown document; bullets link back to the lecture time they came from.
    `panels`: the study panels' sections (outline, key terms, tasks), shown while there is no summary yet (a summary
    carries them itself)."""
    bullets = [_bullet(b) for b in notes or []]
    starts = {f.id: f.start for f in finals or []}
    lines = [f"# {' '.join(title.split()) or 'Lecture notes'}", "", "## Notes", ""]
    lines += _note_lines(bullets, starts) if bullets else ["_No notes were taken._"]
    if summary.strip():
        lines += ["", "## Summary", "", demote_headings(summary.strip(), 3)]
    elif panels.strip():
        lines += ["", demote_headings(panels.strip(), 2)]
    return "\n".join(lines) + "\n"
