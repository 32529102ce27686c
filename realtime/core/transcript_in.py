"""Transcripts made elsewhere, read back as finals (sans-I/O), so that `realtime notes FILE` can take notes of a
lecture this server never heard: plain text with one utterance per line, or this project's own JSON, SRT and VTT
exports (and any SRT or WebVTT file of the usual shape).

Times: subtitles carry them; a plain-text line gets a time from the speaking rate (150 words or 250 CJK characters
a minute), so notes and the summary can still link to "about when" it was said. Unknown input raises
TranscriptError with a message a user can act on.
"""

from __future__ import annotations

import json
import re

from realtime.core.protocol import UNNUMBERED, Final

FORMATS = ("txt", "json", "srt", "vtt")
WORDS_PER_S = 150 / 60
CJK_PER_S = 250 / 60
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff]")
_CUE_TIME = re.compile(r"(?:(\d+):)?(\d{1,2}):(\d{2})[,.](\d{1,3})\s*-->\s*(?:(\d+):)?(\d{1,2}):(\d{2})[,.](\d{1,3})")
_TAG = re.compile(r"<[^>]+>")


class TranscriptError(ValueError):
    pass


def guess_format(name: str, text: str) -> str:
    """The format from the file name's extension, else from the content."""
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if ext in FORMATS:
        return ext
    head = text.lstrip("\ufeff \n")
    if head.startswith("WEBVTT"):
        return "vtt"
    if head.startswith("{"):
        return "json"
    return "srt" if _CUE_TIME.search(head[:500]) else "txt"


def parse(text: str, fmt: str) -> list[Final]:
    """Finals (numbered from 0, in order, as a room numbers its own) from a transcript in `fmt`; TranscriptError
    when it holds none."""
    text = text.lstrip("\ufeff")
    if fmt == "json":
        finals = _json(text)
    elif fmt in ("srt", "vtt"):
        finals = _cues(text)
    elif fmt == "txt":
        finals = _lines(text)
    else:
        raise TranscriptError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    finals = [f for f in finals if f.text.strip()]
    if not finals:
        raise TranscriptError(f"no text found in this {fmt} transcript")
    return [Final(i, i, f.start, f.end, f.text, f.language) for i, f in enumerate(finals)]


def _json(text: str) -> list[Final]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise TranscriptError(f"not valid JSON: {exc}") from None
    rows = data.get("finals") if isinstance(data, dict) else data
    if not isinstance(rows, list):
        raise TranscriptError('expected the JSON export of a room ({"finals": [...]}) or a list of finals')
    out = []
    for row in rows:
        if not (isinstance(row, dict) and isinstance(row.get("text"), str)):
            raise TranscriptError("each final needs a string 'text'")
        start, end = _number(row.get("start")), _number(row.get("end"))
        out.append(Final(UNNUMBERED, 0, start, max(start, end), row["text"].strip(),
                         row.get("language") if isinstance(row.get("language"), str) else None))
    return out


def _number(value: object) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _cues(text: str) -> list[Final]:
    out = []
    for block in re.split(r"\n\s*\n", text.replace("\r\n", "\n")):
        lines = [line for line in block.strip().split("\n") if line.strip()]
        at = next((i for i, line in enumerate(lines) if _CUE_TIME.search(line)), None)
        if at is None:
            continue  # WEBVTT header, NOTE, STYLE blocks
        m = _CUE_TIME.search(lines[at])
        g = [int(x) if x else 0 for x in m.groups()]
        start = g[0] * 3600 + g[1] * 60 + g[2] + g[3] / 10 ** len(m.group(4))
        end = g[4] * 3600 + g[5] * 60 + g[6] + g[7] / 10 ** len(m.group(8))
        words = " ".join(_TAG.sub("", line).strip() for line in lines[at + 1:])
        out.append(Final(UNNUMBERED, 0, start, max(start, end), words))
    return out


def _lines(text: str) -> list[Final]:
    out, t = [], 0.0
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        cjk = len(_CJK.findall(line))
        seconds = max(1.0, cjk / CJK_PER_S + len(_CJK.sub(" ", line).split()) / WORDS_PER_S)
        out.append(Final(UNNUMBERED, 0, round(t, 2), round(t + seconds, 2), line))
        t += seconds + 0.5
    return out
