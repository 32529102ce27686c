"""`LocalLLM`: the bundled model served by llama.cpp in a managed child process (`python -m realtime.llm.child`).

asyncio-friendly: `await start()` reassembles the weights if needed (in a thread), starts the child on a loopback
port and waits until `GET /v1/models` answers; a supervisor task restarts the child with exponential backoff when it
dies (`restarts` counts those deaths) and `await stop()` ends it (SIGTERM, then SIGKILL). The port stays the same
across restarts, so an `LLMClient` made with `base_url` keeps working. The child runs at a lower CPU priority (nice)
with `threads` threads: on a small machine the speech recognizer must keep the CPU (see `default_threads`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from realtime.config import available_cpus
from realtime.llm.weights import WeightsError, ensure_weights, local_model, model_path

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 180.0
STOP_GRACE_S = 5.0
BACKOFF_S = (1.0, 60.0)  # first delay before a restart, and the most it doubles to
STABLE_S = 60.0  # a child that served this long resets the backoff
NICE = 10
LOG_BYTES = 10 << 20  # the child's log is rotated (one old copy) at a start once it is this large


class LocalLLMError(RuntimeError):
    """The local model could not be started; one line meant for the user."""


def default_threads(cpus: int | None = None) -> int:
    """Half the cores, at least one: the other half stays with the speech recognizer, whose captions must not lag.
    llama.cpp's threads meet at a barrier for every layer, so a thread that loses its core stalls the others; more
    threads than the cores left over would slow the LLM without speeding it up, and take cores from the captions."""
    return max(1, (cpus or available_cpus()) // 2)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class LocalLLM:
    slots = 1  # llama.cpp serves one request at a time here (the whole context for it): the client queues the rest

    def __init__(self, model: str = "local", *, cache_dir: str | Path, threads: int = 0, context: int = 8192,
                 port: int = 0, host: str = "127.0.0.1", nice: int = NICE, log_path: str | Path | None = None,
                 ready_timeout_s: float = READY_TIMEOUT_S, backoff_s: tuple[float, float] = BACKOFF_S):
        self.model = local_model(model)  # WeightsError for an unknown name
        self.cache_dir = Path(cache_dir).expanduser()
        self.threads = threads or default_threads()
        self.context = context
        self.host = host
        self.port = port or free_port(host)
        self.nice = nice
        self.log_path = Path(log_path) if log_path else model_path(self.model, self.cache_dir).with_suffix(".log")
        self.ready_timeout_s = ready_timeout_s
        self.backoff_s = backoff_s
        self.restarts = 0  # times the child was started again after it died (or failed to start)
        self.healthy = False
        self.load_s = 0.0  # start to ready, of the last start
        self.gguf: Path | None = None
        self.last_error = ""
        self._proc: subprocess.Popen | None = None
        self._supervisor: asyncio.Task | None = None
        self._stopping = False

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    async def start(self, wait: bool = True) -> None:
        """Assemble the weights (WeightsError if their packages are missing), start the child and, with `wait`,
        wait until it answers (LocalLLMError if it does not); the supervisor keeps it running from then on."""
        if self._supervisor is not None:
            return
        self._stopping = False
        self.gguf = await asyncio.to_thread(ensure_weights, self.model.name, self.cache_dir)
        await self._spawn()
        ready = asyncio.get_running_loop().create_future()
        ready.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved, even when nobody waits
        self._supervisor = asyncio.create_task(self._supervise(ready), name=f"local-llm-{self.name}")
        if wait:
            await asyncio.shield(ready)

    async def stop(self) -> None:
        self._stopping = True
        self.healthy = False
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None
        await asyncio.to_thread(self._end_child)

    def health(self) -> dict:
        return {"model": self.name, "description": self.model.description, "up": self.healthy,
                "restarts": self.restarts, "port": self.port, "base_url": self.base_url, "pid": self.pid,
                "threads": self.threads, "context": self.context, "load_s": round(self.load_s, 2),
                "last_error": self.last_error}

    async def _spawn(self) -> None:
        assert self.gguf is not None
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            if self.log_path.stat().st_size > LOG_BYTES:
                os.replace(self.log_path, self.log_path.with_name(self.log_path.name + ".1"))
        cmd = [sys.executable, "-m", "realtime.llm.child", "--gguf", str(self.gguf), "--alias", self.name,
               "--host", self.host, "--port", str(self.port), "--threads", str(self.threads),
               "--ctx", str(self.context), "--nice", str(self.nice)]
        with open(self.log_path, "ab") as logf:
            # stdin: a pipe only we hold, so the child ends when we do; its own session keeps a terminal's Ctrl-C
            # away from it (we stop it ourselves, without the supervisor mistaking that for a crash).
            self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=logf, stderr=logf,
                                          start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self._started = time.monotonic()

    async def _wait_ready(self) -> bool:
        """Poll GET /v1/models until it answers 200 (True) or the child exits or the time is up (False)."""
        deadline = time.monotonic() + self.ready_timeout_s
        timeout = aiohttp.ClientTimeout(total=2)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while time.monotonic() < deadline:
                if self._proc is None or self._proc.poll() is not None:
                    return False
                with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError, OSError):
                    async with session.get(f"{self.base_url}/models") as r:
                        if r.status == 200:
                            return True
                await asyncio.sleep(0.25)
        return False

    async def _supervise(self, ready: asyncio.Future) -> None:
        """Wait for the child to answer, then for it to exit; restart it with backoff until stopped."""
        failures = 0
        try:
            while not self._stopping:
                if self._proc is not None and await self._wait_ready():
                    self.healthy, self.last_error = True, ""
                    self.load_s = time.monotonic() - self._started
                    log.warning("local LLM %s ready on %s in %.1f s (pid %d, %d thread(s))", self.name,
                                self.base_url, self.load_s, self._proc.pid, self.threads)
                    if not ready.done():
                        ready.set_result(None)
                    rc = await self._wait_exit()
                    self.healthy = False
                    if self._stopping:
                        return
                    if time.monotonic() - self._started > STABLE_S:
                        failures = 0
                    self.last_error = f"exited with status {rc}"
                elif self._proc is not None:
                    rc = self._proc.poll()
                    self.last_error = (f"exited with status {rc} before answering" if rc is not None
                                       else f"did not answer within {self.ready_timeout_s:.0f} s")
                if not ready.done():  # the first start failed: start() says so; we keep trying
                    ready.set_exception(LocalLLMError(f"the local LLM {self.name} {self.last_error} "
                                                      f"(log: {self.log_path})"))
                await asyncio.to_thread(self._end_child)
                self.restarts += 1
                delay = min(self.backoff_s[1], self.backoff_s[0] * 2 ** failures)
                failures += 1
                log.warning("local LLM %s %s; restart %d in %.1f s (log: %s)", self.name, self.last_error,
                            self.restarts, delay, self.log_path)
                await asyncio.sleep(delay)
                if not self._stopping:
                    try:
                        await self._spawn()
                    except OSError as exc:
                        self.last_error = f"could not be started: {exc}"
        finally:
            self.healthy = False
            if not ready.done():
                ready.cancel()

    async def _wait_exit(self) -> int | None:
        proc = self._proc
        while proc is not None and proc.poll() is None and not self._stopping:
            await asyncio.sleep(0.25)
        return proc.poll() if proc is not None else None

    def _end_child(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()


__all__ = ["LocalLLM", "LocalLLMError", "WeightsError", "default_threads"]
