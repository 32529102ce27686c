"""Test speech: the recorded clips in ../shared/audio (REALTIME_TEST_AUDIO), or espeak-ng speech made from known text
when that folder is absent, so the suite passes on any machine."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from testbed import ROOT

SR = 16000

SYNTH_SENTENCES = {
    "synth-en-000": "The mitochondria is the powerhouse of the cell and produces most of its energy.",
    "synth-en-001": "Newton's second law states that force equals mass times acceleration.",
    "synth-en-002": "In the next lecture we will discuss the structure of proteins and enzymes.",
    "synth-en-003": "Please read chapter four of the textbook before Thursday.",
}


@dataclass(frozen=True)
class Clip:
    name: str
    path: Path
    reference: str

    @property
    def language(self) -> str:
        m = re.match(r"fleurs-([a-z]{2})-", self.name)
        return m.group(1) if m else "en"

    def samples(self) -> np.ndarray:
        return read_wav(self.path)


def audio_dir() -> Path:
    return Path(os.environ.get("REALTIME_TEST_AUDIO", ROOT.parent / "shared" / "audio"))


def read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path)) as w:
        if w.getframerate() != SR or w.getnchannels() != 1 or w.getsampwidth() != 2:
            from realtime.audiofile import read_audio

            return read_audio(path)
        return np.frombuffer(w.readframes(w.getnframes()), "<i2").copy()


def write_wav(path: Path, samples: np.ndarray) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes(samples.astype("<i2").tobytes())


def synthesize(target: Path) -> list[Clip]:
    """Speak the known sentences with espeak-ng (Debian package) into 16 kHz mono WAVs."""
    return speak(SYNTH_SENTENCES, target)


def speak(sentences: dict[str, str], target: Path) -> list[Clip]:
    """Speak the given sentences (name -> text) with espeak-ng into 16 kHz mono WAVs: speech whose words a test
    chooses (an assignment said out loud, a term defined)."""
    from realtime.audiofile import read_audio

    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError("no test audio: ../shared/audio is absent and espeak-ng is not installed "
                           "(apt-get install espeak-ng, or set REALTIME_TEST_AUDIO)")
    target.mkdir(parents=True, exist_ok=True)
    clips = []
    for name, text in sentences.items():
        raw = target / f"{name}.raw.wav"
        subprocess.run([exe, "-v", "en-us", "-s", "150", "-w", str(raw), text], check=True)
        path = target / f"{name}.wav"
        write_wav(path, read_audio(raw))
        (target / f"{name}.txt").write_text(text)
        clips.append(Clip(name, path, text))
    return clips


def load_clips(cache: Path) -> list[Clip]:
    folder = audio_dir()
    if folder.is_dir() and any(folder.glob("*.wav")):
        return [Clip(p.stem, p, p.with_suffix(".txt").read_text().strip()) for p in sorted(folder.glob("*.wav"))
                if p.with_suffix(".txt").is_file()]
    return synthesize(cache)


def english(clips: list[Clip]) -> list[Clip]:
    return [c for c in clips if c.language == "en"]


_NUMBERS = {"0": "zero", "1": "one", "2": "two", "3": "three", "4": "four", "5": "five", "6": "six", "7": "seven",
            "8": "eight", "9": "nine", "10": "ten", "20": "twenty", "25": "twenty five", "30": "thirty"}


def normalise(text: str) -> str:
    """Lower case, no punctuation, digits spelled out, single spaces: both sides of a WER go through this."""
    text = text.lower().replace("-", " ")
    text = re.sub(r"[^\w\s']", " ", text)
    words = []
    for w in text.split():
        words.extend(_NUMBERS.get(w, w).split())
    return " ".join(words)


def wer(reference: str, hypothesis: str) -> float:
    import jiwer

    ref, hyp = normalise(reference), normalise(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    return jiwer.wer(ref, hyp)


@dataclass(frozen=True)
class Lecture:
    audio: np.ndarray
    spans: list[tuple[float, float]]  # (start, end) of each clip in lecture time
    clips: list[Clip]


def make_lecture(clips: list[Clip], seed: int = 7, lead_s: float = 2.0, noise_db: float = -55.0,
                 gaps: list[float] | None = None) -> Lecture:
    """Clips joined with 1-3 s gaps of low white noise (or the given `gaps`, one after each clip), starting with
    `lead_s` of the same noise."""
    rng = np.random.default_rng(seed)
    amp = 32768 * 10 ** (noise_db / 20)

    def gap(seconds: float) -> np.ndarray:
        return (rng.standard_normal(int(seconds * SR)) * amp).astype(np.int16)

    parts, spans, t = [gap(lead_s)], [], lead_s
    for i, clip in enumerate(clips):
        samples = clip.samples()
        spans.append((t, t + len(samples) / SR))
        parts.append(samples)
        t += len(samples) / SR
        g = gaps[i] if gaps is not None else float(rng.uniform(1.0, 3.0)) if i < len(clips) - 1 else 1.0
        parts.append(gap(g))
        t += g
    return Lecture(np.concatenate(parts), spans, clips)
