"""`python -m realtime.llm.child`: llama.cpp's OpenAI-compatible HTTP server (xllamacpp) in a process of its own.

Started by `process.LocalLLM`, never by hand. Lowers its own CPU priority first (os.nice: the speech recognizer in
the parent must keep the cores), asks llama.cpp's threads not to busy-wait (poll 0) and to run at low priority, then
serves until its standard input closes (the parent went away, even by SIGKILL) or SIGTERM arrives.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m realtime.llm.child")
    p.add_argument("--gguf", required=True)
    p.add_argument("--alias", required=True, help="the model name /v1/models reports")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--ctx", type=int, default=8192)
    p.add_argument("--nice", type=int, default=10)
    p.add_argument("--verbosity", type=int, default=1)
    return p.parse_args(argv)


def params(args: argparse.Namespace):
    import xllamacpp

    p = xllamacpp.CommonParams()
    p.model.path = args.gguf
    p.model_alias = {args.alias}
    p.n_ctx = args.ctx
    p.n_parallel = 1  # one slot with the whole context; the client queues its calls (LocalLLM.slots)
    p.n_batch = p.n_ubatch = 512
    for cpu in (p.cpuparams, p.cpuparams_batch):
        cpu.n_threads = args.threads
        cpu.poll = 0  # no busy-waiting between work: idle cores stay with the recognizer
        cpu.priority = xllamacpp.ggml_sched_priority.GGML_SCHED_PRIO_LOW
    p.cache_ram_mib = 0  # no host-memory prompt cache (8 GiB by default); the slot still reuses its prefix
    p.n_threads_http = 2
    p.hostnames = [args.host]
    p.port = args.port
    p.ui = False
    p.warmup = True
    p.verbosity = args.verbosity
    return p


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.nice:
        try:
            os.nice(args.nice)
        except OSError:
            pass
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle (it stops us)
    import xllamacpp

    server = xllamacpp.Server(params(args))  # listens from here on, in llama.cpp's threads
    print(f"llama.cpp serving {args.alias} on http://{args.host}:{args.port}/v1", file=sys.stderr, flush=True)
    try:
        while sys.stdin.buffer.read(1 << 16):  # the parent holds the other end: EOF = it is gone
            pass
    except OSError:
        pass
    del server
    os._exit(0)  # llama.cpp's threads would otherwise keep the process alive


if __name__ == "__main__":
    sys.exit(main())
