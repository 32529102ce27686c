"""Export formats checked by parsing them back with real subtitle parsers (srt, webvtt-py) and json (no server)."""

from __future__ import annotations

import html
import json
import random
from dataclasses import replace

import pytest
import srt
import webvtt

from realtime.core.agreement import HypWord, join_words
from realtime.core.export import FORMATS, to_json, to_markdown, to_srt, to_txt, to_vtt
from realtime.core.protocol import Final
from realtime.notes.state import Bullet

VOCAB = ("the gradient of a function points uphill so we step the other way and repeat until the loss stops "
         "falling, which is why learning rates matter; Backpropagation computes it efficiently. Questions?").split()
MAX_LINE, MAX_CUE_S, MIN_CUE_S = 42, 7.0, 0.3  # subtitling practice, fixed here so the module cannot drift
LONG = "pneumonoultramicroscopicsilicovolcanoconiosis-and-more"  # 54 characters: longer than a line


def final(i: int, start: float, words: list[tuple[str, float, float]], language: str | None = "en") -> Final:
    """A final as the server makes it: word texts without their leading space, text joined by `join_words`."""
    hyp = [HypWord(w.strip(), a, b) for w, a, b in words]
    ws = [{"w": h.text, "start": h.start, "end": h.end, "p": 0.9} for h in hyp]
    return Final.from_dict({"type": "final", "seq": i + 1, "id": i, "utterance": i, "start": start,
                            "end": words[-1][2] if words else start + 1, "text": join_words(hyp),
                            "language": language, "words": ws})


def spoken(i: int, start: float, text: str, step: float = 0.3) -> Final:
    """A final whose words are evenly timed from `start`."""
    return final(i, start, [(" " + w, start + k * step, start + k * step + step * 0.8) for k, w in
                            enumerate(text.split())])


def bare(i: int, start: float, end: float, text: str) -> Final:
    return Final(i, i, start, end, text)


def lecture(seed: int, n: int = 200) -> list[Final]:
    """A long, messy lecture: pauses, a few long words, finals without words, about 75 minutes."""
    rng, t, out = random.Random(seed), 0.0, []
    for i in range(n):
        t += rng.uniform(0.1, 4.0)
        if i % 17 == 5:
            text = " ".join(rng.choice(VOCAB) for _ in range(rng.randint(1, 40)))
            out.append(bare(i, round(t, 2), round(t + rng.uniform(0.5, 15), 2), text))
            t = out[-1].end
            continue
        words, start = [], round(t, 2)
        for _ in range(rng.randint(8, 80)):
            t += rng.uniform(1.5, 3.0) if rng.random() < 0.03 else rng.uniform(0, 0.1)  # sometimes a pause
            w = LONG if rng.random() < 0.01 else rng.choice(VOCAB)
            d = rng.uniform(8, 12) if rng.random() < 0.005 else rng.uniform(0.1, 0.6)  # rarely a stuck word
            words.append((" " + w, round(t, 2), round(t + d, 2)))
            t += d
        out.append(final(i, start, words, rng.choice(["en", "en", "en", None, "de"])))
    return out


def close(a: float, b: float) -> bool:
    return abs(a - b) <= 0.0005  # times in the files are whole milliseconds


def norm(text: str) -> str:
    return " ".join(text.split())


def check_cues(finals: list[Final], cues: list[tuple[float, float, str]]) -> None:
    """The subtitle rules, for (start s, end s, text) cues parsed from a file."""
    assert norm(" ".join(c[2] for c in cues)) == norm(" ".join(f.text for f in finals))
    todo = [(f, norm(f.text).split()) for f in finals if norm(f.text)]
    for k, (start, end, text) in enumerate(cues):
        lines = text.split("\n")
        assert 1 <= len(lines) <= 2, text
        assert all(len(line) <= MAX_LINE or " " not in line for line in lines), text  # only one long word may exceed
        assert start <= end <= start + MAX_CUE_S + 1e-9
        if k + 1 < len(cues):
            assert end <= cues[k + 1][0], "cues overlap"
            assert end - start >= MIN_CUE_S - 1e-9 or end == cues[k + 1][0]
        else:
            assert end - start >= MIN_CUE_S - 1e-9
        tokens = text.split()  # the cue takes whole words from one final, in order
        f, rest = todo[0]
        assert rest[:len(tokens)] == tokens, (text, rest[:len(tokens)])
        assert start >= f.start - 0.0005 and end <= max(f.end, start + MIN_CUE_S) + 0.0005
        words = f.words[len(f.words) - len(rest):][:len(tokens)]
        if len(f.words) == len(norm(f.text).split()):  # one word per token: the cue's times are its words'
            first, last = max(words[0].start, f.start), min(words[-1].end, f.end)
            assert close(start, first)
            assert all(w.start < end for w in words), "a word of the cue is spoken after the cue is gone"
            nxt = cues[k + 1][0] if k + 1 < len(cues) else float("inf")
            if not close(end, last) and end < last:  # cut short: by the next cue, or at the longest cue
                assert close(end, nxt) or close(end, start + MAX_CUE_S)
            elif not close(end, last):  # lengthened to the shortest cue, or as far as the next cue allows
                assert close(end, start + MIN_CUE_S) or (close(end, nxt) and end < start + MIN_CUE_S)
        todo[0] = (f, rest[len(tokens):])
        if not todo[0][1]:
            todo.pop(0)
    assert not todo


def srt_cues(text: str) -> list[tuple[float, float, str]]:
    subs = list(srt.parse(text))
    assert [s.index for s in subs] == list(range(1, len(subs) + 1))
    return [(s.start.total_seconds(), s.end.total_seconds(), s.content) for s in subs]


def vtt_cues(text: str) -> list[tuple[float, float, str]]:
    assert text.startswith("WEBVTT\n\n")
    vtt = webvtt.from_string(text, strict=True)
    return [(c.start_time.in_milliseconds() / 1000, c.end_time.in_milliseconds() / 1000, html.unescape(c.raw_text))
            for c in vtt.captions]


def test_a_short_final_is_one_cue_with_exact_times() -> None:
    f = spoken(0, 1.52, "And so, my fellow Americans, ask not")
    assert to_srt([f]) == "1\n00:00:01,520 --> 00:00:03,560\nAnd so, my fellow Americans, ask not\n\n"
    assert to_vtt([f]) == "WEBVTT\n\n00:00:01.520 --> 00:00:03.560\nAnd so, my fellow Americans, ask not\n\n"


def test_a_long_final_splits_into_cues_at_word_times() -> None:
    f = spoken(0, 10.0, " ".join(VOCAB))
    cues = srt_cues(to_srt([f]))
    assert len(cues) > 1
    check_cues([f], cues)
    starts = {round(w.start, 3) for w in f.words}
    assert all(round(c[0], 3) in starts for c in cues)
    assert cues[0][0] == 10.0 and cues[-1][1] == pytest.approx(f.words[-1].end)
    assert any(len(c[2].split("\n")) == 2 for c in cues)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_long_realistic_lecture_keeps_every_rule(seed: int) -> None:
    finals = lecture(seed)
    assert finals[-1].end > 3600 + 10 * 60
    srt_out, vtt_out = srt_cues(to_srt(finals)), vtt_cues(to_vtt(finals))
    check_cues(finals, srt_out)
    assert vtt_out == srt_out


def test_hours_are_right_past_the_first_hour() -> None:
    f = spoken(0, 3 * 3600 + 25 * 60 + 7.25, "late in the evening")
    g = spoken(1, 12 * 3600 + 0.5, "very late")
    out = to_srt([f, g])
    assert "03:25:07,250 --> 03:25:08,390" in out and "12:00:00,500 --> " in out
    assert "03:25:07.250 --> 03:25:08.390" in to_vtt([f, g])
    assert srt_cues(out)[1][0] == 12 * 3600 + 0.5
    assert vtt_cues(to_vtt([f, g]))[0][0] == f.start


def test_vtt_escapes_markup_and_srt_keeps_it() -> None:
    f = spoken(0, 0.0, "if a < b && c > d then <b>bold</b>")
    raw = to_vtt([f])
    assert "a &lt; b &amp;&amp; c &gt; d then &lt;b&gt;bold&lt;/b&gt;" in raw
    assert vtt_cues(raw)[0][2] == f.text
    assert webvtt.from_string(raw).captions[0].text == raw.split("\n")[3]  # no tag was seen, none was stripped
    assert srt_cues(to_srt([f]))[0][2] == f.text


def test_finals_without_words_use_their_own_times() -> None:
    short = bare(0, 5.0, 7.5, "No word times here.")
    long = bare(1, 20.0, 40.0, " ".join(VOCAB * 2))
    cues = srt_cues(to_srt([short, long]))
    assert cues[0] == (5.0, 7.5, "No word times here.")
    assert len(cues) > 2 and cues[-1][1] == 40.0
    check_cues([short, long], cues)


def test_an_empty_transcript() -> None:
    assert to_srt([]) == "" and list(srt.parse(to_srt([]))) == []
    assert to_vtt([]) == "WEBVTT\n\n" and webvtt.from_string(to_vtt([])).captions == []
    assert to_txt([]) == ""
    assert json.loads(to_json("r", "t", []))["duration_s"] == 0


def test_a_long_word_gets_its_own_line_and_glued_pieces_stay_together() -> None:
    f = final(0, 0.0, [("I", 0.0, 0.2), ("(", 0.2, 0.3), ("see", 0.3, 0.4), (")", 0.4, 0.5), ("know", 0.5, 0.8),
                       (LONG, 0.8, 2.0), ("really", 2.0, 2.4), (",", 2.4, 2.4)])
    lines = [line for c in srt_cues(to_srt([f])) for line in c[2].split("\n")]
    assert LONG in lines and any("(see)" in line for line in lines) and lines[-1].endswith("really,")
    # the most even break would fall inside "(see)"; a pause inside it must not split the cue there either
    f = final(0, 0.0, [("a" * 20, 0.0, 1.0), ("(", 1.0, 1.2), ("see)", 1.2, 1.4), ("b" * 20, 1.4, 2.0)])
    assert srt_cues(to_srt([f]))[0][2] == "a" * 20 + "\n(see) " + "b" * 20
    f = final(0, 0.0, [("I", 0.0, 0.2), ("know", 0.2, 0.4), (".", 2.4, 2.6)])
    assert [c[2] for c in srt_cues(to_srt([f]))] == ["I know."]


def test_unspaced_scripts_get_no_spaces_and_still_wrap() -> None:
    text = "我们今天讨论的是一个非常重要的问题就是如何在实时系统中进行语音识别并且生成字幕这需要很多技术" * 2
    f = final(0, 0.0, [(ch, k * 0.1, k * 0.1 + 0.1) for k, ch in enumerate(text)], "zh")
    cues = vtt_cues(to_vtt([f]))
    assert "".join(c[2].replace("\n", "") for c in cues) == text
    assert all(len(line) <= MAX_LINE for c in cues for line in c[2].split("\n"))


def test_cue_timing_limits() -> None:
    stuck = final(0, 0.0, [(" Hmm", 0.0, 12.0)])  # one word cannot be split: its cue is cut at 7 s
    blip = final(1, 20.0, [(" Ok", 20.0, 20.1)])  # too short: lengthened into the silence after it
    crowded = final(2, 30.0, [(" a", 30.0, 30.05)])
    after = final(3, 30.2, [(" b", 30.2, 30.4)])
    overlapping = final(4, 40.0, [(" x", 40.0, 42.0)])
    early = final(5, 41.5, [(" y", 41.5, 43.0)])
    cues = srt_cues(to_srt([stuck, blip, crowded, after, overlapping, early]))
    assert [c[:2] for c in cues] == [(0.0, 7.0), (20.0, 20.3), (30.0, 30.2), (30.2, 30.5), (40.0, 41.5), (41.5, 43.0)]


def test_word_times_outside_their_final_and_finals_out_of_order() -> None:
    late = final(1, 10.0, [(" later", 9.8, 10.4), (" on", 10.4, 11.3)])
    late = replace(late, end=11.0)  # Whisper's word times can stray a little past the segment
    early = spoken(0, 2.0, "first things")
    assert [c[:2] for c in srt_cues(to_srt([late, early]))] == [(2.0, 2.54), (10.0, 11.0)]


def test_cues_and_lines_are_even_rather_than_greedy() -> None:
    cues = srt_cues(to_srt([spoken(0, 0.0, " ".join(["word"] * 20), step=0.1)]))  # 99 characters: 2 cues
    assert [len(c[2]) for c in cues] == [49, 49]  # not 84 + 14
    f = spoken(0, 0.0, f"{'x' * 20} yy {'z' * 20}")  # two equally even breaks: the longer line goes below
    assert srt_cues(to_srt([f]))[0][2] == f"{'x' * 20}\nyy {'z' * 20}"


def test_cues_prefer_to_end_with_a_sentence() -> None:
    one = "This first sentence is exactly fifty characters."
    two = "And the second one is a bit longer, sixty characters in all."
    cues = srt_cues(to_srt([spoken(0, 0.0, f"{one} {two}", step=0.1)]))
    assert [norm(c[2]) for c in cues] == [one, two]


def test_a_long_pause_inside_a_final_starts_a_new_cue() -> None:
    f = final(0, 0.0, [(" So", 0.0, 0.3), (" then", 0.3, 0.6), (" after", 3.0, 3.4), (" that", 3.4, 3.7)])
    assert [c[2] for c in srt_cues(to_srt([f]))] == ["So then", "after that"]


def test_txt_starts_paragraphs_at_pauses() -> None:
    finals = [spoken(0, 0.0, "One."), spoken(1, 1.0, "Two."), spoken(2, 3.24, "Three."),  # 2.0 s after "Two."
              spoken(3, 5.23, "Four."), bare(4, 6.0, 6.5, "  "), spoken(5, 7.2, "Five")]
    assert to_txt(finals) == "One. Two.\n\nThree. Four. Five\n"


def test_json_round_trips_segments() -> None:
    finals = [spoken(0, 0.0, "Grüße aus Köln"), bare(1, 2.0, 3.0, "no words"), spoken(2, 4.0, "x")]
    finals = [replace(f, language=lang) for f, lang in zip(finals, ("de", None, "en"), strict=True)]
    finals.append(replace(spoken(3, 5.0, "y"), language="de"))
    notes = [{"id": "n1", "text": "**A**", "refs": [0], "parent": None}, Bullet("n2", "b", (1,), "n1")]
    out = to_json("room-1", "Lecture 3", finals, notes, "# Sum")
    assert "Grüße" in out and out.startswith('{\n "room": "room-1"')
    doc = json.loads(out)
    assert doc["room"] == "room-1" and doc["title"] == "Lecture 3" and doc["summary"] == "# Sum"
    assert doc["duration_s"] == finals[-1].end and doc["language"] == "de"
    assert doc["segments"] == [{k: v for k, v in f.to_dict(0).items() if k in ("id", "start", "end", "text", "language",
                                                                            "words")} for f in finals]
    assert doc["notes"] == [notes[0], {"id": "n2", "text": "b", "refs": [1], "parent": "n1"}]
    assert json.loads(to_json("r", "t", [bare(0, 0, 1, "a")]))["language"] is None


def test_markdown_nests_bullets_and_stamps_times() -> None:
    finals = [bare(0, 5.0, 6.0, "a"), bare(1, 725.9, 730.0, "b"), bare(2, 3725.0, 3730.0, "c")]
    notes = [{"id": "n1", "text": "Gradient **descent**", "refs": [1, 0], "parent": None},
             {"id": "n2", "text": "Other topic", "refs": [2], "parent": None},
             {"id": "n3", "text": "step size", "refs": [], "parent": "n1"},
             {"id": "n4", "text": "deeper", "refs": [99, 0], "parent": "n3"},
             {"id": "n5", "text": "lost\nacross lines", "refs": [], "parent": "gone"}]
    md = to_markdown("Lecture 3", notes, "", finals)
    assert md == ("# Lecture 3\n\n## Notes\n\n- Gradient **descent** _(12:05)_\n  - step size\n    - deeper _(0:05)_\n"
                  "- Other topic _(1:02:05)_\n- lost\n  across lines\n")
    assert "_(" not in to_markdown("L", notes, "")  # no finals, no stamps


def test_markdown_shows_bullets_in_a_parent_cycle_once() -> None:
    notes = [{"id": "a", "text": "A", "refs": [], "parent": "b"}, {"id": "b", "text": "B", "refs": [], "parent": "a"}]
    assert to_markdown("T", notes, "").endswith("## Notes\n\n- A\n  - B\n")


def test_markdown_demotes_summary_headings() -> None:
    summary = "# Room: topics\n**Core topic:** x\n## Main points\n1. a\n\nSetext\n===\n```\n# not a heading\n```\n"
    md = to_markdown("T", [], summary)
    assert md == ("# T\n\n## Notes\n\n_No notes were taken._\n\n## Summary\n\n### Room: topics\n**Core topic:** x\n"
                  "#### Main points\n1. a\n\n### Setext\n```\n# not a heading\n```\n")
    assert "### Already deep" in to_markdown("T", [], "### Already deep\ntext")
    assert to_markdown("T", None, "  \n") == "# T\n\n## Notes\n\n_No notes were taken._\n"


def test_formats_name_media_types_and_extensions() -> None:
    assert FORMATS == {"txt": ("text/plain", "txt"), "srt": ("application/x-subrip", "srt"),
                       "vtt": ("text/vtt", "vtt"), "json": ("application/json", "json"),
                       "md": ("text/markdown", "md")}
