"""Caption translation with the REAL bundled model (the 1.5B, the `llm` extra), through the real server, on real
speech: an English lecture read in German and in Chinese, a German clip read in English through both paths (the LLM
per viewer, and Whisper's own translate task). Sized for 2 cores: three short clips, a handful of calls.

How a translation is judged without a second model:
- the script: Chinese is mostly CJK characters;
- the language, for German and English, by function words: the most frequent words of a language are short, closed
  class and nearly disjoint between these two, so a line in German holds more of German's than of English's
  ("der", "und", "ist" against "the", "and", "is");
- faithfulness where it can be checked mechanically: every number of the line and (into German and English) every
  name written with a capital inside the sentence is there in the translation.
Figures (final -> translation, tokens) go to test-artifacts/translation_real.json."""

from __future__ import annotations

import asyncio
import json
import re

import pytest

from realtime.client import listen, stream_audio
from testbed.server import ARTIFACTS, ServerProcess
from testbed.speech import Clip, english, make_lecture

from .test_local_llm import MISSING

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(MISSING is not None, reason=f"the llm extra is not installed: {MISSING}")]

FUNCTION_WORDS = {
    "de": {"der", "die", "das", "und", "ist", "nicht", "zu", "von", "mit", "den", "dem", "im", "ein", "eine", "sich",
           "auf", "für", "es", "dass", "werden", "wird", "kann", "können", "auch", "an", "zum", "sie", "wie", "bis"},
    "en": {"the", "and", "is", "of", "to", "in", "that", "it", "by", "for", "on", "with", "as", "be", "could",
           "can", "are", "was", "from", "at", "you", "this", "or", "an"},
}


def words(text: str) -> list[str]:
    return re.findall(r"[^\W\d_]+", text.lower())


def looks_like(text: str, lang: str) -> bool:
    """Whether `text` is in `lang` by the checks of the module docstring."""
    if lang == "zh":
        letters = [c for c in text if c.isalpha()]
        return bool(letters) and sum("\u4e00" <= c <= "\u9fff" for c in letters) / len(letters) >= 0.6
    other = "en" if lang == "de" else "de"
    seen = words(text)
    own = sum(w in FUNCTION_WORDS[lang] for w in seen)
    return own >= 1 and own > sum(w in FUNCTION_WORDS[other] for w in seen)


def kept(source: str, translation: str, names: bool) -> list[str]:
    """The numbers (and, with `names`, the capitalised names inside the sentence) of `source` missing from
    `translation`."""
    wanted = re.findall(r"\d+", source)
    if names:
        wanted += re.findall(r"(?<=[a-z,] )[A-Z][a-z]+", source)
    return [w for w in wanted if w.lower() not in translation.lower()]


@pytest.fixture(scope="module")
def server(cache_dir, tmp_path_factory):
    srv = ServerProcess(cache_dir, tmp_path_factory.mktemp("translate-real") / "server.log", "--llm-model", "local",
                        "--llm-timeout-s", "240", "--no-notes")
    yield srv
    srv.stop()


async def translated(server: ServerProcess, room: str, clip: Clip, languages: list[str], spoken: str
                     ) -> tuple[list[dict], dict[str, list[dict]]]:
    """Stream `clip` into `room` with one viewer per language; the finals and each viewer's translations, once
    every final has one in every language (the translations follow the captions: on 2 cores the recognizer and the
    model share the CPU)."""
    got: dict[str, list[dict]] = {lang: [] for lang in languages}
    viewers = [asyncio.create_task(listen(server.url, room, translate=lang, on_event=got[lang].append))
               for lang in languages]
    await asyncio.sleep(0.5)
    result = await stream_audio(server.url, room, make_lecture([clip], lead_s=0.5).audio, speed=1.0,
                                language=spoken)
    ids = {f["id"] for f in result.finals}

    def lines(lang: str) -> list[dict]:
        return [e for e in got[lang] if e["type"] == "translation"]

    for _ in range(480):
        if all(ids <= {t["final"] for t in lines(lang)} for lang in languages):
            break
        await asyncio.sleep(0.5)
    for task in viewers:
        task.cancel()
    await asyncio.gather(*viewers, return_exceptions=True)
    return result.finals, {lang: lines(lang) for lang in languages}


def record(figures: dict) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / "translation_real.json"
    old = json.loads(path.read_text()) if path.is_file() else {}
    path.write_text(json.dumps({**old, **figures}, indent=2, ensure_ascii=False))


async def test_an_english_lecture_in_german_and_chinese(server, clips):
    clip = next((c for c in english(clips) if re.search(r"\d", c.reference) or c.name == "fleurs-en-000"),
                english(clips)[0])
    finals, lines = await translated(server, "real-en", clip, ["de", "zh"], "en")
    assert finals
    for lang in ("de", "zh"):
        by_final = {t["final"]: t for t in lines[lang]}
        assert set(by_final) == {f["id"] for f in finals}, lines[lang]
        for f in finals:
            t = by_final[f["id"]]
            assert t["state"] == "done" and t["text"], t
            assert not kept(f["text"], t["text"], names=lang == "de"), (f["text"], t["text"])  # English names
        whole = " ".join(by_final[f["id"]]["text"] for f in finals)  # a line may be one word ("However,")
        assert looks_like(whole, lang), whole
    health = server.get_json("/healthz")["translations"]
    record({"en_source": [f["text"] for f in finals], "en_to": {k: [t["text"] for t in v] for k, v in lines.items()},
            "latency_s": health["latency_s"], "tokens_by_language": health["tokens_by_language"]})


async def test_a_german_clip_in_english_by_both_paths(server, clips):
    clip = next((c for c in clips if c.language == "de"), None)
    if clip is None:
        pytest.skip("no German clip (../shared/audio is absent: the synthesized fallback is English only)")
    whisper = await stream_audio(server.url, "real-de-whisper", make_lecture([clip], lead_s=0.5).audio, speed=0,
                                 language="de", task="translate")
    text = " ".join(f["text"] for f in whisper.finals)
    assert looks_like(text, "en"), text  # Whisper's own path: into English, for everyone, no LLM
    finals, lines = await translated(server, "real-de", clip, ["en"], "de")
    source = " ".join(f["text"] for f in finals)
    assert finals and looks_like(source, "de")
    by_final = {t["final"]: t for t in lines["en"]}
    assert all(by_final[f["id"]]["state"] == "done" and by_final[f["id"]]["text"] for f in finals), lines
    llm = " ".join(by_final[f["id"]]["text"] for f in finals)
    assert looks_like(llm, "en"), llm
    # German capitalises every noun, so a name is a capitalised word that the independent path (Whisper's own
    # translation) kept as it was in the German: it must be in the LLM's translation too, as must every number.
    names = {w for w in re.findall(r"(?<=[a-z,] )[A-Z][a-z]+", text) if w.lower() in source.lower()}
    # Every number; most names (the 1.5B turned a misheard "Kovloom" into "Kovlok" at temperature 0: recorded).
    assert all(n in llm for n in re.findall(r"\d+", source)), (source, llm)
    lost = sorted(w for w in names if w.lower() not in llm.lower())
    assert len(lost) <= len(names) // 2, (source, llm, text)
    record({"de_source": [f["text"] for f in finals], "de_to_en_llm": [t["text"] for t in lines["en"]],
            "de_to_en_whisper": text, "names_checked": sorted(names), "names_lost": lost})
