"""The benchmark harness, one command:

    .venv/bin/python -m benchmarks.run [--quick] [--sections stream,capacity,fanout,long] [--models base,tiny.en]
                                       [--device cpu] [--compute-type int8] [-- extra `realtime serve` flags]

Sections, run in this order on one server per model (its peak RSS is reset before each, and the in-process
baselines run before it starts, so that nothing else competes for the CPU):

- stream: per model, the word-timing truth (per clip, cached), the offline and naive fixed-chunk baselines, then
  the dev lecture through the server at `--speed` (1.0), and with `--fast` once more as fast as possible.
- capacity: N speakers in separate rooms at 1.0x for each N of `--capacity`; the largest N under 2.5 s p95.
- fanout: one room, `--listeners` listeners, delivery latency and missed events.
- long: a lecture of `--long-minutes` (10) at 1.0x: does the lag stay bounded?
- overload: the dev lecture at 1.0x alone, then beside abusive clients (a 10x speaker, refused speakers, junk
  messages, a listener that never reads), on a server of its own (`--max-speakers 2 --audio-burst-s 10`).

Each section writes `<section>-<label>.json` into `--out` (benchmarks/results); then results.md and the PNG plots are
rebuilt from every JSON there (`--report-only` does just that). `--quick` is the smoke test's few-second version.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from pathlib import Path
from typing import Any

from benchmarks import baselines, report
from benchmarks.capacity import run_capacity
from benchmarks.common import RESULTS, dev_lecture, environment, long_lecture, long_utterances, write_json
from benchmarks.fanout import raise_fd_limit, run_fanout
from benchmarks.overload import run_overload
from benchmarks.stream import run_stream
from benchmarks.truth import lecture_truth
from testbed.server import Server

SECTIONS = ("stream", "capacity", "fanout", "long", "overload")
OVERLOAD_ARGS = ["--max-speakers", "2", "--audio-burst-s", "10"]


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a few seconds of audio, N=1,2, 20 listeners, no long run")
    p.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated: " + ", ".join(SECTIONS))
    p.add_argument("--models", default="base", help="comma-separated --model values (base, tiny.en, large-v3...)")
    p.add_argument("--device", default="cpu", help="--device for the server and the offline passes")
    p.add_argument("--compute-type", default="auto", help="--compute-type (auto: int8 on cpu, float16 on cuda)")
    p.add_argument("--truth-model", default="base", help="model for the word-timing truth (the largest you can run)")
    p.add_argument("--speed", type=float, default=1.0, help="pace of the stream section (1.0 = real time)")
    p.add_argument("--fast", action="store_true", help="stream section: also play as fast as possible (speed 0)")
    p.add_argument("--chunk-s", type=float, default=2.5, help="naive baseline chunk length")
    p.add_argument("--capacity", default="1,2,4,8", help="comma-separated N of concurrent speakers")
    p.add_argument("--listeners", type=int, default=1000)
    p.add_argument("--long-minutes", type=float, default=10.0)
    p.add_argument("--lecture", choices=("dev", "long-utterances"), default="dev",
                   help="what the stream, capacity and overload sections play (long: always the repeated dev clips)")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--report-only", action="store_true", help="only rebuild results.md and the plots")
    args = p.parse_args(argv)
    if args.quick:
        args.capacity, args.listeners = "1,2", 20
        if "--sections" not in argv:
            args.sections = "stream,capacity,fanout"
    unknown = set(args.sections.split(",")) - set(SECTIONS)
    if unknown:
        p.error(f"unknown sections: {', '.join(sorted(unknown))}")
    return args, extra


def label(model: str, device: str, compute_type: str) -> str:
    from realtime.asr.whisper import pick_device

    device, compute_type = pick_device(device, compute_type)
    name = re.sub(r"[^A-Za-z0-9.+-]+", "_", Path(model).name if "/" in model else model)
    return f"{name}-{device}-{compute_type}"


def server_args(model: str, args: argparse.Namespace, extra: list[str], speakers: int = 0) -> list[str]:
    out = ["--model", model, "--device", args.device, "--compute-type", args.compute_type]
    if speakers and "--max-speakers" not in extra:
        out += ["--max-speakers", str(speakers)]
    return out + extra


async def run_model(model: str, args: argparse.Namespace, extra: list[str]) -> list[dict[str, Any]]:
    """Every requested section for one model on one server (peak RSS is reset between sections)."""
    names = args.sections.split(",")
    tag = label(model, args.device, args.compute_type)
    ns = [int(n) for n in args.capacity.split(",")]
    short = long_utterances() if args.lecture == "long-utterances" else dev_lecture(args.quick)
    benches = {n: long_lecture(args.long_minutes) if n == "long" else short for n in names}
    truths = {n: lecture_truth(b, args.truth_model, args.device, args.compute_type) for n, b in benches.items()}
    heads: dict[str, dict[str, Any]] = {}
    for name, bench in benches.items():
        heads[name] = {"section": name, "label": tag, "model": model, "device": args.device,
                       "compute_type": args.compute_type, "truth_model": args.truth_model, "lecture": bench.name,
                       "audio_s": round(bench.audio_s, 1), "env": environment()}
    if "stream" in heads:
        # In-process baselines run before the server starts: they must not compete with it for the CPU.
        bench, truth = benches["stream"], truths["stream"]
        heads["stream"]["offline"] = baselines.offline(bench, model, args.device, args.compute_type)
        heads["stream"]["naive"] = baselines.naive_chunks(bench, truth, model, args.device, args.compute_type,
                                                          args.chunk_s)
    if "overload" in names:  # a server of its own, with a short burst so that the throttling shows
        names.remove("overload")
        flags = server_args(model, args, OVERLOAD_ARGS + extra)
        heads["overload"]["server_args"] = flags
        server = Server(flags, args.out / "logs" / f"overload-{tag}.log")
        try:
            print(f"== overload / {model}", flush=True)
            heads["overload"]["overload"] = await run_overload(server, benches["overload"], truths["overload"])
        finally:
            server.stop()
        write_json(args.out / f"overload-{tag}.json", heads["overload"])
        print(report.one_line(heads["overload"]), flush=True)
    flags = server_args(model, args, extra, max(ns) if "capacity" in names else 0)
    server = Server(flags, args.out / "logs" / f"{tag}.log")
    try:
        for name in names:
            print(f"== {name} / {model}", flush=True)
            head, bench, truth = heads[name], benches[name], truths[name]
            head["server_args"] = flags
            server.reset_peak_rss()
            if name == "stream":
                head["stream"] = await run_stream(server, bench, truth, args.speed, f"stream-{tag}",
                                                  args.out / "events" / f"stream-{tag}.jsonl")
                if args.fast:
                    head["fast"] = await run_stream(server, bench, truth, 0.0, f"fast-{tag}",
                                                    args.out / "events" / f"fast-{tag}.jsonl")
            elif name == "capacity":
                head["capacity"] = await run_capacity(server, bench, truth, ns)
            elif name == "fanout":
                head["fanout"] = await run_fanout(server, bench, args.listeners)
            else:
                head["long"] = await run_stream(server, bench, truth, 1.0, f"long-{tag}",
                                                args.out / "events" / f"long-{tag}.jsonl")
            write_json(args.out / f"{name}-{tag}.json", head)
            print(report.one_line(head), flush=True)
    finally:
        server.stop()
    return list(heads.values())


def main(argv: list[str] | None = None) -> int:
    args, extra = parse(sys.argv[1:] if argv is None else argv)
    raise_fd_limit()
    if not args.report_only:
        for model in args.models.split(","):
            asyncio.run(run_model(model, args, extra))
    md = report.build(args.out)
    print(f"wrote {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
