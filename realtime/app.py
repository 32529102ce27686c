"""Wiring: settings -> model -> engine -> aiohttp app, and the process's event loop."""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from aiohttp import web

from realtime.config import Settings
from realtime.engine import Engine
from realtime.model import DecodeOptions, ModelError, WhisperDecoder, pick_device
from realtime.notes.llm import LLMClient, LLMConfig
from realtime.server import create_app

log = logging.getLogger("realtime")


def build_decoder(settings: Settings) -> WhisperDecoder:
    device, compute_type = pick_device(settings.device, settings.compute_type)
    options = DecodeOptions(settings.partial_beam, settings.final_beam, settings.encoder_pad_s,
                            settings.final_full_window)
    workers = settings.workers or (2 if device == "cuda" else 1)
    return WhisperDecoder(settings.model, device=device, compute_type=compute_type, cpu_threads=settings.cpu_threads,
                          workers=workers, cache_dir=settings.cache_dir, options=options)


def build_engine(settings: Settings, decoder: WhisperDecoder) -> Engine:
    per_worker = 8 if decoder.device == "cuda" else 2
    max_speakers = settings.max_speakers or per_worker * decoder.workers
    return Engine(decoder, decoder.workers, max_speakers)


def build_llm(settings: Settings) -> LLMClient | None:
    if not settings.llm_model:
        return None
    return LLMClient(LLMConfig(settings.llm_model, settings.llm_base_url or None, settings.llm_api_key,
                               settings.llm_temperature, settings.llm_max_tokens, settings.llm_timeout_s,
                               settings.llm_retries))


def install_uvloop() -> bool:
    if sys.platform == "win32":
        return False
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


def run_server(settings: Settings) -> int:
    logging.getLogger().setLevel(settings.log_level.upper())
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    fast_loop = install_uvloop()
    try:
        decoder = build_decoder(settings)
    except ModelError as exc:
        print(f"realtime: {exc}", file=sys.stderr)
        return 2
    decoder.warm_up()
    log.warning("model %s loaded from %s on %s/%s in %.1f s (workers %d, loop %s)", settings.model, decoder.path,
                decoder.device, decoder.compute_type, decoder.load_s, decoder.workers,
                "uvloop" if fast_loop else "asyncio")
    app = create_app(settings, build_engine(settings, decoder), build_llm(settings))
    print(f"realtime serving on http://{settings.host}:{settings.port}", flush=True)
    web.run_app(app, host=settings.host, port=settings.port, print=None, access_log=None,
                handle_signals=True, shutdown_timeout=10)
    return 0
