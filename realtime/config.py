"""The one settings object.

Every tunable lives here as a dataclass field with a default and a help text. The CLI builds its flags from these
fields and `REALTIME_<NAME>` environment variables override defaults, so the README table, the flags and the
environment share one definition (tests/core/test_config.py checks the README table). No other module reads
the environment: the few variables that are not settings are read by the functions below (`state_dir`,
`client_key`, `hf_hub_offline`), and tests/core/test_config.py checks that nothing else reads them.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from realtime.core.origins import parse_allowlist
from realtime.core.protocol import BYTES_PER_SECOND, SAMPLE_RATE


def available_cpus() -> int:
    """The cores this process may run on (its affinity mask, e.g. a container's cpuset), else all of them."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1

MIN_ADMIN_KEY_CHARS = 24  # a person's admin key must resist guessing as well as the 192-bit keys made here


def _default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return str(Path(base) / "realtime")


def state_dir() -> Path:
    """$XDG_STATE_HOME/realtime, else ~/.local/state/realtime (a relative XDG_STATE_HOME is ignored, as the XDG
    spec asks): the default database and `realtime certs`' pair live here."""
    state = os.environ.get("XDG_STATE_HOME", "")
    base = Path(state) if os.path.isabs(state) else Path.home() / ".local" / "state"
    return base / "realtime"


def client_key() -> str | None:
    """The room key of `realtime stream | listen | room | export` from REALTIME_KEY (None if unset or empty): the
    environment keeps it out of shell history and `ps`."""
    return os.environ.get("REALTIME_KEY") or None


def hf_hub_offline() -> bool:
    """Whether HF_HUB_OFFLINE forbids Hugging Face downloads (set to anything but empty or 0)."""
    return os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")


def _default_db_path() -> str:
    """$XDG_STATE_HOME/realtime/realtime.db, else ~/.local/state/realtime/realtime.db."""
    return str(state_dir() / "realtime.db")


def opt(default: Any, help: str, **kw: Any) -> Any:
    """A settings field with its help text (shown by --help and in the README table)."""
    if callable(default):
        return field(default_factory=default, metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class Settings:
    # server
    host: str = opt("127.0.0.1", "Address to bind.")
    port: int = opt(8000, "TCP port for HTTP and WebSocket.")
    log_level: str = opt("info", "Logging level (debug, info, warning, error).")
    static_dir: str = opt("", "Directory of browser pages to serve at / (default: the repository's static/).")
    allowed_origins: str = opt("", "Other web origins whose pages may use the WebSockets and HTTP API, e.g. the "
                               "site embedding the widget: comma-separated https://host[:port] or * (any).")
    public_url: str = opt("", "Base URL people use to reach this server, for the viewer links rooms are created with, "
                          "e.g. https://captions.example.edu (empty: the address of the request).")
    tls_cert: str = opt("", "PEM certificate (chain) file: serve HTTPS and WSS on --port directly, without a proxy "
                        "(with --tls-key; `realtime certs` makes a self-signed pair for a LAN).")
    tls_key: str = opt("", "PEM private key file of --tls-cert.")
    open_rooms: bool = opt(False, "Keyless rooms made on first use, for a quick start on this machine (`make serve` "
                           "sets it): only while bound to loopback with no admin key and no --public-url, and only "
                           "for requests whose Host is a loopback name.")
    metrics_port: int = opt(0, "Serve /metrics and the detailed /healthz without a key on this loopback port too "
                            "(0 = off; on the main port they need the admin key).")
    # rooms, keys and storage
    db: str = opt(_default_db_path, "SQLite database of rooms, transcripts, notes and summaries (':memory:' keeps "
                  "nothing across restarts).")
    db_synchronous: str = opt("normal", "SQLite synchronous mode: 'normal' survives a crash of the process but may "
                              "lose the last commits on power loss; 'full' syncs every commit to disk.")
    admin_key: str = opt("", "Admin key of the room API. Empty: one is made on the first start bound beyond "
                         "loopback, printed once and stored hashed.", secret=True)
    max_rooms: int = opt(1000, "Rooms that may exist; creating more is refused with too_many_rooms.")
    max_listeners: int = opt(2000, "Connections per room besides its speaker (listeners, and speaker sockets that "
                             "have not started); more are refused with room_full (1013).")
    max_connections: int = opt(20000, "WebSocket connections the server holds at once; more are refused with "
                               "too_many_connections (1013).")
    max_connections_per_ip: int = opt(500, "WebSocket connections one client address may hold at once (0 = no "
                                      "limit); behind a proxy on loopback, the address it forwards.")
    speaker_start_timeout_s: float = opt(10.0, "A speaker socket that has not started a lecture this long after "
                                         "connecting is closed (start_timeout, 4410).")
    max_audio_rate: float = opt(2.0, "Speakers may send audio at most this many times real time, sustained; faster "
                                "senders are slowed down (0 = no limit).")
    audio_burst_s: float = opt(120.0, "Audio a speaker may send ahead of that rate at once (a browser's buffer "
                               "flushed after a reconnect).")
    idle_timeout_s: float = opt(300.0, "A speaker connection that sends nothing for this long is closed (4410); its "
                                "lecture is kept.")
    max_lecture_s: float = opt(6 * 3600.0, "Longest lecture in a room (audio seconds); beyond it the stream is "
                               "stopped with lecture_too_long (4413).")
    # model
    model: str = opt("base", "Whisper model: 'base' (shipped), 'tiny.en' (if installed), a CTranslate2 directory, "
                     "or a hub name such as large-v3 / large-v3-turbo (needs a download or a local HF cache).")
    device: str = opt("auto", "auto, cpu or cuda.")
    compute_type: str = opt("auto", "CTranslate2 compute type; auto = float16 on cuda, int8 on cpu.")
    cpu_threads: int = opt(0, "Threads per decoder worker on CPU (0 = the cores shared out among the workers: 1 "
                              "with the default workers).")
    workers: int = opt(0, "Concurrent decoder workers (0 = one per CPU core on CPU, 2 on CUDA).")
    cache_dir: str = opt(_default_cache_dir, "Where the shipped model is reassembled.")
    max_speakers: int = opt(0, "Concurrent speaking rooms admitted (0 = 2 per CPU worker, 8 per CUDA worker).")
    # VAD
    vad_aggressiveness: int = opt(2, "webrtcvad aggressiveness 0-3 (3 rejects the most non-speech).")
    vad_frame_ms: int = opt(30, "VAD frame length: 10, 20 or 30 ms.")
    vad_silero: bool = opt(True, "Confirm webrtcvad with the bundled Silero model (rejects noise; no download).")
    vad_silero_threshold: float = opt(0.5, "Silero speech probability needed to confirm a frame.")
    vad_preroll_ms: int = opt(300, "Audio kept before detected speech onset.")
    vad_hangover_ms: int = opt(500, "Silence that ends an utterance.")
    early_final_ms: int = opt(200, "Pause after which the utterance's final decode starts, before the hangover ends "
                              "(used as the final if no speech follows; 0 = after the hangover).")
    vad_min_speech_ms: int = opt(200, "Utterances with less voiced audio than this are dropped.")
    max_utterance_s: float = opt(12.0, "Longer speech is cut at the last committed word.")
    # decoding
    partial_interval_s: float = opt(0.25, "Minimum new audio between two partial decodes of one stream.")
    partial_beam: int = opt(1, "Beam size for partial decodes.")
    final_beam: int = opt(5, "Beam size for final decodes.")
    encoder_pad_s: float = opt(3.0, "Partial decodes encode only the utterance plus this much padding instead of "
                               "Whisper's 30 s window (see benchmarks/README.md). Negative = full window.")
    final_encoder_pad_s: float = opt(6.0, "Final decodes encode the utterance plus this much padding (negative = "
                                     "Whisper's full 30 s window; 6 s costs half of it at the same WER).")
    prompt_chars: int = opt(0, "Characters of recent final text carried as the decoder prompt (off by default: "
                            "with base it raised lecture WER from 0.111 to 0.167 by echoing earlier text).")
    commit_min_prob: float = opt(0.2, "Agreed words less probable than this (in either decode) are not committed "
                                 "from partials; the final decode settles them.")
    max_lag_s: float = opt(4.0, "Partial decodes are skipped while a stream lags more than this behind real time.")
    # offline transcription (POST /v1/audio/transcriptions; files longer than --max-lecture-s are refused)
    max_upload_mb: float = opt(500.0, "Largest audio file accepted by /v1/audio/transcriptions and translations, in "
                               "MB (413 beyond it; the upload is streamed to a temporary file, never held in memory).")
    offline_batch_size: int = opt(8, "Speech pieces of up to 30 s decoded as one batch by the offline path.")
    offline_threads: int = opt(1, "On CPU: threads of the offline path's own copy of the model, decoding at the "
                               "lowest CPU priority beside live speakers (0 = share the live model's worker, "
                               "between live decodes). On a GPU the loaded model is shared.")
    offline_idle_threads: int = opt(0, "On CPU: threads of a second copy the offline path decodes with while no "
                                    "live speaker is admitted (0 = every core).")
    # notes
    notes: bool = opt(True, "Keep live notes (extractive TextRank until an LLM is configured).")
    notes_interval_s: float = opt(60.0, "Notes are updated at most this long after new text arrives.")
    notes_min_words: int = opt(150, "Notes are updated early once this many new words were committed.")
    notes_language: str = opt("", "Language of the notes, e.g. 'Chinese' (empty: the lecture's language).")
    llm_model: str = opt("", "LLM model for notes: `local` or `local-0.5b` (the bundled model), or an "
                            "endpoint's model, e.g. gpt-4o-mini, deepseek-chat, llama3.1 (empty: extractive).")
    llm_base_url: str = opt("", "OpenAI-compatible endpoint, e.g. http://127.0.0.1:11434/v1 (empty: OpenAI).")
    llm_api_key: str = opt("", "API key for the LLM (falls back to OPENAI_API_KEY).", secret=True)
    llm_temperature: float = opt(0.2, "LLM sampling temperature.")
    llm_max_tokens: int = opt(1500, "Longest LLM answer, in tokens.")
    llm_timeout_s: float = opt(30.0, "Timeout of one LLM call.")
    llm_retries: int = opt(3, "Retries of a failed LLM call (backoff with jitter; 429 Retry-After respected).")
    llm_window_tokens: int = opt(3000, "Prompt budget of one notes update: the transcript window is cut to fit.")
    llm_room_token_budget: int = opt(200000, "LLM tokens one room's notes may spend; then they stay as they are.")
    llm_visitor_token_budget: int = opt(50000, "LLM tokens one room's questions and summaries may spend (apart from "
                                        "its notes, so visitors cannot use up the notes' budget).")
    llm_translation_token_budget: int = opt(500000, "LLM tokens one room's caption translations may spend, all "
                                            "languages together (then captions stay untranslated, marked as such).")
    max_translation_languages: int = opt(4, "Caption languages one room translates into at once (a viewer asking "
                                         "for one more is refused with too_many_languages).")
    llm_daily_token_cap: int = opt(2000000, "LLM tokens the whole server may spend per day (UTC); then everything "
                                   "falls back to the extractive engine (0 = no cap).")
    llm_concurrency: int = opt(2, "LLM calls in flight at once, server-wide; more wait their turn.")
    llm_threads: int = opt(0, "Threads of the bundled local model (--llm-model local or local-0.5b; 0 = half the "
                           "CPU cores, at least 1: the other half stays with the speech recognizer).")
    llm_context: int = opt(8192, "Context of the bundled local model in tokens, prompt and answer together (room for "
                           "--llm-window-tokens, --llm-max-tokens and the instructions and current notes).")
    ask_max_tokens: int = opt(300, "Longest LLM answer to a question, in tokens.")
    ask_per_minute: float = opt(6.0, "Questions and summary requests one client address may make per minute, after "
                                "a burst of 3 (0 = no limit; the admin key is not limited).")
    # fan-out and limits
    listener_queue: int = opt(512, "Live events buffered per connection before it is closed as too slow (4408).")
    max_frame_bytes: int = opt(BYTES_PER_SECOND, f"Largest binary audio frame ({BYTES_PER_SECOND} bytes = 1 s of "
                               f"{SAMPLE_RATE // 1000} kHz s16le).")
    max_message_bytes: int = opt(65536, "Largest JSON control message.")
    max_room_name: int = opt(64, "Longest room name.")
    status_interval_s: float = opt(2.0, "Period of `status` events while a stream is started.")

    def __repr__(self) -> str:  # keys never reach logs
        shown = {f.name: ("***" if f.metadata.get("secret") and getattr(self, f.name) else getattr(self, f.name))
                 for f in self.fields()}
        return f"Settings({shown})"

    def __post_init__(self) -> None:
        """Refuse impossible settings at start-up, not when the first speaker arrives."""
        checks = [
            (self.vad_frame_ms in (10, 20, 30), "vad_frame_ms must be 10, 20 or 30"),
            (0 <= self.vad_aggressiveness <= 3, "vad_aggressiveness must be 0-3"),
            (0.0 <= self.vad_silero_threshold <= 1.0, "vad_silero_threshold must be within 0-1"),
            (self.device in ("auto", "cpu", "cuda"), "device must be auto, cpu or cuda"),
            (0 < self.port < 65536, "port must be 1-65535"),
            (self.listener_queue >= 1, "listener_queue must be at least 1"),
            (self.max_frame_bytes >= 2, "max_frame_bytes must be at least 2"),
            (self.max_message_bytes >= 256, "max_message_bytes must be at least 256"),
            (self.max_room_name >= 1, "max_room_name must be at least 1"),
            (self.max_upload_mb > 0 and self.offline_batch_size >= 1
             and min(self.offline_threads, self.offline_idle_threads) >= 0,
             "bad offline transcription limits"),
            (self.max_rooms >= 1 and self.max_listeners >= 1, "max_rooms and max_listeners must be at least 1"),
            (self.max_audio_rate >= 0 and self.audio_burst_s >= 1, "max_audio_rate >= 0, audio_burst_s >= 1"),
            (self.idle_timeout_s > 0 and self.max_lecture_s > 0, "timeouts must be positive"),
            (bool(self.db), "db must be a path or :memory:"),
            (self.db_synchronous in ("normal", "full"), "db_synchronous must be normal or full"),
            (not self.admin_key or len(self.admin_key) >= MIN_ADMIN_KEY_CHARS,
             f"admin_key must be at least {MIN_ADMIN_KEY_CHARS} characters (make one: python -c 'import secrets; "
             "print(secrets.token_urlsafe(24))')"),
            (0 <= self.metrics_port < 65536 and self.metrics_port != self.port, "metrics_port must be another port"),
            (self.max_connections >= 1 and self.max_connections_per_ip >= 0, "bad connection limits"),
            (self.speaker_start_timeout_s > 0, "speaker_start_timeout_s must be positive"),
            (self.llm_concurrency >= 1 and self.ask_max_tokens >= 16, "bad LLM limits"),
            (min(self.llm_visitor_token_budget, self.llm_daily_token_cap, self.ask_per_minute) >= 0,
             "LLM budgets and rates cannot be negative"),
            (bool(self.tls_cert) == bool(self.tls_key), "tls_cert and tls_key must be given together"),
            (self.max_utterance_s >= 2.0, "max_utterance_s must be at least 2"),
            (self.partial_interval_s > 0, "partial_interval_s must be positive"),
            (0 <= self.commit_min_prob < 1, "commit_min_prob must be in [0, 1)"),
            (self.partial_beam >= 1 and self.final_beam >= 1, "beam sizes must be at least 1"),
            (self.status_interval_s > 0, "status_interval_s must be positive"),
            (self.notes_interval_s > 0 and self.notes_min_words > 0, "notes cadence must be positive"),
            (self.llm_timeout_s > 0 and self.llm_retries >= 0 and self.llm_max_tokens > 0, "bad LLM limits"),
            (self.llm_window_tokens >= 500, "llm_window_tokens must be at least 500"),
            (self.llm_threads >= 0 and self.llm_context >= 1024, "llm_threads >= 0, llm_context >= 1024"),
            (self.max_translation_languages >= 0 and self.llm_translation_token_budget >= 0,
             "max_translation_languages and llm_translation_token_budget cannot be negative"),
            (min(self.cpu_threads, self.workers, self.max_speakers, self.prompt_chars, self.vad_preroll_ms,
                 self.vad_hangover_ms, self.vad_min_speech_ms, self.early_final_ms) >= 0,
             "counts and durations cannot be negative"),
            (self.log_level.lower() in ("debug", "info", "warning", "error", "critical"), "unknown log_level"),
        ]
        parse_allowlist(self.allowed_origins)  # raises ValueError naming the bad entry
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @classmethod
    def fields(cls) -> list[dataclasses.Field]:
        return list(dataclasses.fields(cls))

    @classmethod
    def from_sources(cls, env: Mapping[str, str] | None = None, args: argparse.Namespace | None = None) -> Settings:
        """Defaults, then `REALTIME_*` environment variables, then command-line flags that were given."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in cls.fields():
            raw = env.get(f"REALTIME_{f.name.upper()}")
            if raw is not None:
                values[f.name] = _coerce(f, raw)
            if args is not None and getattr(args, f.name, None) is not None:
                values[f.name] = getattr(args, f.name)
        if not values.get("llm_api_key") and env.get("OPENAI_API_KEY"):
            values["llm_api_key"] = env["OPENAI_API_KEY"]
        return cls(**values)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """One `--flag` per field; defaults stay None so that unset flags don't shadow the environment."""
        for f in cls.fields():
            flag = "--" + f.name.replace("_", "-")
            typ = _field_type(f)
            if typ is bool:
                parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                                    help=f.metadata["help"])
            else:
                parser.add_argument(flag, dest=f.name, type=typ, default=None, metavar=f.name.upper(),
                                    help=f.metadata["help"])


def _field_type(f: dataclasses.Field) -> type:
    return {"int": int, "float": float, "bool": bool}.get(str(f.type), str)


def _coerce(f: dataclasses.Field, raw: str) -> Any:
    typ = _field_type(f)
    if typ is bool:
        if raw.strip().lower() in ("1", "true", "yes", "on"):
            return True
        if raw.strip().lower() in ("0", "false", "no", "off", ""):
            return False
        raise ValueError(f"REALTIME_{f.name.upper()}: expected a boolean, got {raw!r}")
    try:
        return typ(raw)
    except ValueError:
        raise ValueError(f"REALTIME_{f.name.upper()}: expected {typ.__name__}, got {raw!r}") from None
