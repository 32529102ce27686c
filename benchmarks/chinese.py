"""What the shipped base model does for Chinese: character error rate (CER) on Mandarin lecture sentences spoken by
espeak-ng (`-v cmn-latn-pinyin`; the plain `cmn` voice reads its pinyin out as English), the only Chinese speech
this machine can make (../shared/audio has none), decoded offline clip by clip and streamed through the server as a
lecture at 1.0x, with and without a simplified-Chinese prompt (Whisper often writes Mandarin in traditional
characters; a prompt in simplified characters steers it).

    python -m benchmarks.chinese [--prompt-only]

CER compares characters after dropping punctuation and spaces; digits count as written. espeak-ng's Mandarin is
far from natural speech (flat tones, robotic prosody), so the figures say how base copes with it, not how it would
do on a real lecturer.
Writes benchmarks/results/chinese.json.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import tempfile
import time
import unicodedata
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS, Bench, environment, write_json
from realtime.client import stream_audio
from testbed.server import CACHE, Server
from testbed.speech import Clip, make_lecture, write_wav

# Written for this benchmark: a thermodynamics lecture's opening, sentence lengths 3-8 s when spoken.
SENTENCES = [
    "今天我们讲热力学第二定律和熵的概念。",
    "热量不会自发地从低温物体传到高温物体。",
    "卡诺循环由两个等温过程和两个绝热过程组成。",
    "热机的效率永远小于一，因为总有一部分热量被排放到冷源。",
    "熵可以理解为系统微观状态数目的对数。",
    "下周四之前请阅读教材第四章，并完成课后习题。",
    "期中考试会考到今天讲的所有内容。",
    "如果有问题，可以在课后来办公室找我。",
]
PROMPT = "以下是普通话的句子，使用简体中文。"


def characters(text: str) -> str:
    return "".join(c for c in text if not (unicodedata.category(c).startswith(("P", "Z", "S")) or c.isspace()))


def cer(reference: str, hypothesis: str) -> float:
    import jiwer

    ref, hyp = characters(reference), characters(hypothesis)
    return jiwer.cer(ref, hyp) if ref else float(bool(hyp))


def synthesize(folder: Path) -> list[Clip]:
    from realtime.audiofile import read_audio

    exe = shutil.which("espeak-ng")
    if exe is None:
        raise SystemExit("espeak-ng is needed: apt-get install espeak-ng")
    folder.mkdir(parents=True, exist_ok=True)
    clips = []
    for i, text in enumerate(SENTENCES):
        raw, path = folder / f"zh-{i:03d}.raw.wav", folder / f"zh-{i:03d}.wav"
        subprocess.run([exe, "-v", "cmn-latn-pinyin", "-s", "160", "-w", str(raw), text], check=True)
        write_wav(path, read_audio(raw))
        clips.append(Clip(f"zh-{i:03d}", path, text))
    return clips


def offline(clips: list[Clip], prompt: str | None) -> dict[str, Any]:
    from faster_whisper import WhisperModel

    from realtime.asr.whisper import resolve_model

    model = WhisperModel(str(resolve_model("base", CACHE)), device="cpu", compute_type="int8", cpu_threads=2)
    texts = []
    for clip in clips:
        segments, _ = model.transcribe(clip.samples().astype("float32") / 32768.0, language="zh", beam_size=5,
                                       initial_prompt=prompt, condition_on_previous_text=False)
        texts.append("".join(s.text for s in segments).strip())
    per_clip = [round(cer(c.reference, t), 3) for c, t in zip(clips, texts, strict=True)]
    return {"cer": round(cer("".join(c.reference for c in clips), "".join(texts)), 3), "per_clip": per_clip,
            "texts": texts}


async def streamed(bench: Bench, prompt: str | None, tmp: Path) -> dict[str, Any]:
    server = Server([], tmp / f"server-{bool(prompt)}.log")
    try:
        result = await stream_audio(server.url, f"zh-{bool(prompt)}", bench.lecture.audio, speed=1.0,
                                    language="zh", prompt=prompt or "")
    finally:
        server.stop()
    text = "".join(e["text"] for e in result.finals)
    return {"cer": round(cer(bench.reference, text), 3), "finals": len(result.finals), "text": text}


async def main_async(args: argparse.Namespace) -> int:
    out: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "env": environment(),
                           "speech": "espeak-ng -v cmn-latn-pinyin", "model": "base (shipped)",
                           "sentences": len(SENTENCES), "prompt": PROMPT, "runs": {}}
    with tempfile.TemporaryDirectory(prefix="chinese-") as tmp:
        clips = synthesize(Path(tmp) / "clips")
        lecture = make_lecture(clips)
        bench = Bench("zh", lecture)
        out["audio_s"] = round(bench.audio_s, 1)
        for prompt in ([PROMPT] if args.prompt_only else [None, PROMPT]):
            key = "prompt" if prompt else "plain"
            out["runs"][key] = {"offline": offline(clips, prompt),
                                "streamed": await streamed(bench, prompt, Path(tmp))}
            print(key, {k: v["cer"] for k, v in out["runs"][key].items()}, flush=True)
    write_json(RESULTS / "chinese.json", out)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompt-only", action="store_true", help="only the run with the simplified-Chinese prompt")
    return asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())
