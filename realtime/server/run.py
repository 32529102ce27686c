"""Wiring: settings -> model -> engine -> aiohttp app, and the process's event loop."""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import sys

from aiohttp import web

from realtime.asr.offline import OfflineTranscriber
from realtime.asr.pool import Engine
from realtime.asr.whisper import DecodeOptions, ModelError, WhisperDecoder, cpu_layout, pick_device
from realtime.config import Settings, available_cpus
from realtime.core.access import ADMIN_KEY_META, Gate, hash_key, is_loopback, new_key, open_rooms_allowed
from realtime.core.records import Store
from realtime.llm.process import LocalLLM, LocalLLMError
from realtime.llm.weights import MODELS as LOCAL_MODELS
from realtime.llm.weights import WeightsError, ensure_weights
from realtime.notes.llm import LLMClient, LLMConfig
from realtime.server.app import create_app
from realtime.server.appkeys import OFFLINE
from realtime.storage.sqlite import open_store

log = logging.getLogger("realtime")


def build_decoder(settings: Settings) -> WhisperDecoder:
    device, compute_type = pick_device(settings.device, settings.compute_type)
    options = DecodeOptions(settings.partial_beam, settings.final_beam, settings.encoder_pad_s,
                            settings.final_encoder_pad_s)
    if device == "cuda":
        workers, threads = settings.workers or 2, settings.cpu_threads
    else:
        workers, threads = cpu_layout(settings.workers, settings.cpu_threads, available_cpus())
    return WhisperDecoder(settings.model, device=device, compute_type=compute_type, cpu_threads=threads,
                          workers=workers, cache_dir=settings.cache_dir, options=options)


def build_engine(settings: Settings, decoder: WhisperDecoder) -> Engine:
    per_worker = 8 if decoder.device == "cuda" else 2
    max_speakers = settings.max_speakers or per_worker * decoder.workers
    return Engine(decoder, decoder.workers, max_speakers)


LOCAL_TIMEOUT_S = 240.0


def build_llm(settings: Settings, local: LocalLLM | None = None) -> LLMClient | None:
    """The notes' LLM client: for `local`, the managed model's endpoint (its one slot: the client queues the calls,
    where no timeout runs, instead of llama.cpp)."""
    if not settings.llm_model:
        return None
    base_url = local.base_url if local is not None else settings.llm_base_url or None
    concurrency = min(settings.llm_concurrency, local.slots) if local is not None else settings.llm_concurrency
    # A local model on shared CPU cores reads a full notes window in about 100 s (1.5B, one thread): its calls get
    # at least LOCAL_TIMEOUT_S, or every update would time out and be retried for nothing.
    timeout = max(settings.llm_timeout_s, LOCAL_TIMEOUT_S) if local is not None else settings.llm_timeout_s
    return LLMClient(LLMConfig(settings.llm_model, base_url, settings.llm_api_key,
                               settings.llm_temperature, settings.llm_max_tokens, timeout,
                               settings.llm_retries), concurrency=concurrency)


def build_local_llm(settings: Settings) -> LocalLLM | None:
    """The bundled model in a managed child process, for `--llm-model local | local-0.5b` without --llm-base-url
    (with one, that endpoint is used: `realtime llm` shared by several servers). Its weights are assembled and
    checked here, before the server starts (WeightsError: the packages are missing or damaged)."""
    if settings.llm_model not in LOCAL_MODELS or settings.llm_base_url:
        return None
    local = LocalLLM(settings.llm_model, cache_dir=settings.cache_dir, threads=settings.llm_threads,
                     context=settings.llm_context)
    ensure_weights(settings.llm_model, settings.cache_dir)
    return local


def manage_local_llm(app: web.Application, local: LocalLLM) -> None:
    """Start the model with the app (a failed start is logged and retried: captions do not wait for notes) and stop
    it at cleanup, after the notes that use it."""

    async def start(_: web.Application) -> None:
        try:
            await local.start()
        except (LocalLLMError, WeightsError) as exc:
            log.error("%s; notes stay as they are until it answers", exc)

    async def stop(_: web.Application) -> None:
        await local.stop()

    app.on_startup.append(start)
    app.on_cleanup.append(stop)


def build_gate(settings: Settings, store: Store) -> Gate:
    """The access rules. A server reachable from other machines gets an admin key on its first start: printed
    once (stdout, not the log) and stored only as a hash."""
    stored = store.get_meta(ADMIN_KEY_META)
    if not is_loopback(settings.host) and not settings.admin_key and stored is None:
        key = new_key("ak_")
        store.set_meta(ADMIN_KEY_META, hash_key(key))
        stored = hash_key(key)
        print(f"realtime: admin key for the room API (shown once, stored hashed): {key}", flush=True)
    configured = bool(settings.admin_key) or stored is not None
    open_rooms = open_rooms_allowed(settings.host, configured, settings.public_url, settings.open_rooms)
    if settings.open_rooms and not open_rooms:
        log.warning("--open-rooms is ignored: keyless rooms are only for a server bound to loopback with no admin key "
                    "and no --public-url")
    return Gate(open_rooms, settings.admin_key, stored)


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    """The server side of direct TLS (`--tls-cert`, `--tls-key`): TLS 1.2 or newer, Python's default ciphers.
    Raises ValueError with a one-line reason when the pair cannot be used."""
    for what, path in (("certificate", cert), ("key", key)):
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise ValueError(f"cannot read the TLS {what} {path}: {exc.strerror or exc}") from None

    def no_password() -> str:  # an encrypted key: fail instead of prompting on the terminal
        raise ValueError("encrypted")

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key, password=no_password)
    except (ssl.SSLError, ValueError) as exc:
        text = " ".join(str(exc).split())
        if text == "encrypted":
            reason = "the key is encrypted (give an unencrypted PEM key)"
        elif getattr(exc, "reason", None) == "KEY_VALUES_MISMATCH":
            reason = "the key does not belong to the certificate"
        elif "PEM lib" in text:  # OpenSSL's word for a file that is not the PEM it expects
            reason = f"not a PEM certificate (chain) and PEM private key ({text})"
        else:
            reason = text
        raise ValueError(f"cannot use the TLS certificate {cert} with the key {key}: {reason}") from None
    return context


def install_uvloop() -> bool:
    if sys.platform == "win32":
        return False
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


class ClientErrorsInOneLine(logging.Filter):
    """aiohttp logs a request it cannot parse (a request line over max_line_size, a malformed header) with a full
    traceback, though the client is at fault and was answered 400: one line each, so a scanner cannot flood the log
    with tracebacks or hide a real one among them."""

    def filter(self, record: logging.LogRecord) -> bool:
        from aiohttp.http_exceptions import HttpProcessingError

        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg = f"{record.getMessage()}: {type(exc).__name__} ({str(exc.message)[:120]})"
            record.args, record.exc_info, record.exc_text, record.levelno, record.levelname = (
                None, None, None, logging.INFO, "INFO")
            return logging.getLogger().isEnabledFor(logging.INFO)
        return True


def run_server(settings: Settings) -> int:
    logging.getLogger().setLevel(settings.log_level.upper())
    logging.getLogger("aiohttp.server").addFilter(ClientErrorsInOneLine())
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    fast_loop = install_uvloop()
    ssl_context = None
    if settings.tls_cert:  # checked before the model loads: a wrong path fails at once
        try:
            ssl_context = tls_context(settings.tls_cert, settings.tls_key)
        except ValueError as exc:
            print(f"realtime: {exc}", file=sys.stderr)
            return 2
    try:
        decoder = build_decoder(settings)
    except ModelError as exc:
        print(f"realtime: {exc}", file=sys.stderr)
        return 2
    try:
        local_llm = build_local_llm(settings)
    except WeightsError as exc:
        print(f"realtime: {exc}", file=sys.stderr)
        return 2
    try:
        store = open_store(settings.db, synchronous=settings.db_synchronous)
    except Exception as exc:  # sqlite3.Error, OSError: a path we cannot open or a newer schema
        print(f"realtime: cannot open the database {settings.db}: {exc}", file=sys.stderr)
        return 2
    gate = build_gate(settings, store)
    decoder.warm_up()
    log.warning("rooms: %s; database %s", "open on first use (--open-rooms: loopback, no admin key)" if gate.open_rooms
                else "made with `realtime room create` or the admin API; publishing needs the speaker key",
                settings.db)
    log.warning("model %s loaded from %s on %s/%s in %.1f s (workers %d, loop %s)", settings.model, decoder.path,
                decoder.device, decoder.compute_type, decoder.load_s, decoder.workers,
                "uvloop" if fast_loop else "asyncio")
    app = create_app(settings, build_engine(settings, decoder), store, gate, build_llm(settings, local_llm),
                     local_llm=local_llm)
    app[OFFLINE] = OfflineTranscriber(decoder, batch_size=settings.offline_batch_size,  # uploads, /v1/audio
                                      threads=settings.offline_threads, idle_threads=settings.offline_idle_threads)
    if local_llm is not None:
        manage_local_llm(app, local_llm)
    scheme = "https" if ssl_context else "http"
    print(f"realtime serving on {scheme}://{settings.host}:{settings.port}", flush=True)
    web.run_app(app, host=settings.host, port=settings.port, print=None, access_log=None,
                handle_signals=True, shutdown_timeout=10, ssl_context=ssl_context)
    return 0
