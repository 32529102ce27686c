"""Guards against Whisper's hallucinations, applied to every hypothesis before it reaches the commit policy.

Whisper invents text where there is none: subtitle credits and sign-offs on silence or noise ("Thanks for
watching", "字幕由Amara.org社群提供"), loops that repeat an n-gram, and confident text over non-speech. We drop
segments the decoder itself flags as non-speech, drop phantom phrases unless the audio under them is real speech,
and cut repetition loops.

A prompt adds a failure of its own: given course terms (the room's slides, the glossary), the decoder "hears" them
in noise, and the base model writes "NADH, NADH," over a hum. The echo guard drops a segment made mostly of the
prompt's words when the decoder itself doubts there was speech (`prompt_echo`); a term the lecturer said comes
with a confident decode and stays.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from realtime.core.agreement import HypWord, norm

# Normalised (see commit.norm, words joined by spaces) phrases Whisper emits over silence or music.
PHANTOM_PHRASES = {
    "thank you", "thank you very much", "thanks for watching", "thank you for watching",
    "thanks for watching and see you next time", "please subscribe", "subscribe to my channel",
    "like and subscribe", "see you next time", "see you in the next video", "bye", "bye bye", "you",
    "so", "okay", "the end", "music", "applause", "silence", "blank audio",
    "sous titres réalisés para la communauté d amara org", "sous titrage st 501", "merci",
    "untertitel im auftrag des zdf für funk 2017", "untertitel der amara org community", "vielen dank",
    "谢谢观看", "字幕由amara org社群提供", "請不吝點贊 訂閱 轉發 打賞支持明鏡與點點欄目",
    "ご視聴ありがとうございました", "продолжение следует", "редактор субтитров а синецкая корректор а егорова",
}
# Fragments that are never real lecture speech.
PHANTOM_FRAGMENTS = ("amara org", "amaraorg", "subtitles by", "subtitled by", "untertitel", "字幕", "sous titres",
                     "transcribed by", "blank_audio", "blankaudio")
_URL = re.compile(r"\b(www\.|https?:|[a-z0-9-]+\.(com|org|net)\b)")


LEADING_MIN_PROB = 0.02
# Function words a glossary sentence shares with any speech: they say nothing about an echo.
_HINT_STOPWORDS = frozenset("the and for are was with this that from into over you our its has have not but can "
                            "will how why what when where who which all any one two".split())
ECHO_SHARE = 0.5  # a segment with at least this share of prompt words is an echo candidate
ECHO_NO_SPEECH = 0.25  # ... dropped if the decoder's no-speech probability is above this,
ECHO_LOGPROB = -0.8  # or its mean log probability below this,
ECHO_WORD_PROB = 0.5  # or its prompt words' mean probability below this


@dataclass
class Segment:
    words: list[HypWord]
    no_speech_prob: float = 0.0
    avg_logprob: float = 0.0
    compression_ratio: float = 1.0
    extra: dict = field(default_factory=dict)


def phrase_key(words: list[HypWord]) -> str:
    return " ".join(k for k in (norm(w.text.replace(".", " ").replace("-", " ")) for w in words) if k)


def is_phantom(words: list[HypWord]) -> bool:
    key = phrase_key(words)
    spaced = " ".join(w.text.casefold() for w in words)
    if _URL.search(spaced):
        return True
    spaced = spaced.replace(".", " ")
    return key in PHANTOM_PHRASES or any(f in spaced or f in key for f in PHANTOM_FRAGMENTS)


def cut_repetitions(words: list[HypWord], max_n: int = 6) -> list[HypWord]:
    """Drop decoder stutters (a word repeated with almost no time between the two onsets), then cut the hypothesis
    where an n-gram starts repeating back to back (a single word 4 times, longer n-grams 3)."""
    words = [w for i, w in enumerate(words)
             if not (i and norm(w.text) == norm(words[i - 1].text) and w.start - words[i - 1].start < 0.2)]
    return _cut_loop(words, max_n)


def _cut_loop(words: list[HypWord], max_n: int = 6) -> list[HypWord]:
    keys = [norm(w.text) for w in words]
    for i in range(len(keys)):
        for n in range(1, max_n + 1):
            times = 4 if n == 1 else 3
            if i + n * times > len(keys):
                break
            gram = keys[i:i + n]
            if all(keys[i + r * n:i + (r + 1) * n] == gram for r in range(1, times)):
                return words[:i + n]
    return words


def has_loop(segments: list[Segment]) -> bool:
    """Whether a decode degenerated into a repetition loop."""
    words = [w for seg in segments for w in seg.words]
    return len(_cut_loop(words)) < len(words)


def prompt_words(*texts: str) -> frozenset[str]:
    """The comparison keys of the words in the decoder's hints (hotwords, prompt), less function words."""
    return frozenset(k for text in texts for k in (norm(w) for w in re.split(r"[\s,;.:/()\[\]-]+", text))
                     if len(k) > 1 and k not in _HINT_STOPWORDS)


def prompt_echo(seg: Segment, hints: frozenset[str]) -> bool:
    """Whether `seg` is the prompt echoed into silence or noise: mostly prompt words (by `hints`), and a decode
    the model itself doubts (see ECHO_*)."""
    if not hints or not seg.words:
        return False
    keys = [norm(w.text) for w in seg.words]
    hinted = [w for w, k in zip(seg.words, keys, strict=True) if k in hints or k and k.rstrip("s") in hints]
    if not hinted or len(hinted) < ECHO_SHARE * sum(1 for k in keys if k):
        return False
    doubt = sum(w.prob for w in hinted) / len(hinted) < ECHO_WORD_PROB
    return seg.no_speech_prob > ECHO_NO_SPEECH or seg.avg_logprob < ECHO_LOGPROB or doubt


def spelled_noise(seg: Segment) -> bool:
    """Single letters ("R .I .P.", "P .P .P") where the decoder doubts there was speech: what a prompted decoder
    writes over clicks and hiss, never a lecture's words."""
    keys = [norm(w.text) for w in seg.words]
    letters = [k for k in keys if k]
    return bool(letters) and all(len(k) == 1 and k.isalpha() for k in letters) and (
        seg.no_speech_prob > ECHO_NO_SPEECH or seg.avg_logprob < ECHO_LOGPROB)


def clean(segments: list[Segment], speech_end: float | None = None,
          hints: frozenset[str] = frozenset()) -> list[HypWord]:
    """The trustworthy words of a decode.

    `speech_end` is the stream time where the VAD last heard voice in this utterance; a phantom phrase that starts
    after it is decoded from trailing silence. `hints` are the words the decoder was prompted with
    (`prompt_words`), for the echo guard.
    """
    kept: list[HypWord] = []
    for seg in segments:
        if not seg.words or prompt_echo(seg, hints) or spelled_noise(seg):
            continue
        if seg.no_speech_prob > 0.6 and seg.avg_logprob < -1.0:
            continue
        if seg.avg_logprob < -1.5:
            continue
        if is_phantom(seg.words):
            after_speech = speech_end is not None and seg.words[0].start >= speech_end - 0.2
            doubtful = seg.no_speech_prob > 0.3 or seg.avg_logprob < -0.7 or len(segments) == 1 and not kept
            fragment = phrase_key(seg.words) not in PHANTOM_PHRASES
            if after_speech or doubtful or fragment:
                continue
        kept.extend(seg.words)
    # A decoder given a prompt sometimes "continues" it with a word it cannot hear (probability ~0) at the start.
    while kept and kept[0].prob < LEADING_MIN_PROB:
        kept.pop(0)
    kept = cut_repetitions(kept)
    while speech_end is not None and kept and _echo_after_speech(kept, speech_end):
        kept.pop()
    return kept


def _echo_after_speech(kept: list[HypWord], speech_end: float) -> bool:
    """Whether the last word was decoded from the silence after the speech, not heard. Base echoes a short
    utterance: "However, however,", the second word either 0 s long 0.13 s after the speech, or a repeat of the
    word before it over the first 0.1 s of the next word, cut off by the end of the utterance."""
    last = kept[-1]
    if last.start < speech_end:
        return False
    timeless = last.end - last.start < 0.05
    repeat = len(kept) > 1 and norm(last.text) == norm(kept[-2].text)
    return timeless or repeat
