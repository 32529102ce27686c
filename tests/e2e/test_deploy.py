"""The deployment recipes in deploy/ with real components: nginx and Caddy running the shipped configurations (only
their placeholders replaced) in front of a real server, direct TLS with a `realtime certs` certificate, and the
systemd unit checked by systemd-analyze.

Two listeners idle for two minutes while the other tests run: one through nginx to the server (which pings every
30 s of silence), and one that never pings, through nginx to a quiet upstream that never pings either, which only
nginx's own long timeouts keep open (its default would cut it after 60 s). The last test checks both.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import shlex
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import websockets

from realtime.certs import CertPair, make_self_signed
from realtime.client import listen, stream_audio, upload_file
from testbed.server import ServerProcess, free_port
from testbed.speech import ROOT, Clip, english, wer, write_wav

pytestmark = pytest.mark.slow

DEPLOY = ROOT / "deploy"
IDLE_S = 120.0  # nginx's default proxy_read_timeout is 60 s
IDLE_ROOM = "deploy-idle"
ADMIN = "ak_deploy-test-admin-key"
# Behind a proxy nobody gets keyless rooms: the backend has an admin key and these rooms, made through the admin API.
ROOMS = (IDLE_ROOM, "deploy-origin", "deploy-nginx", "deploy-caddy", "deploy-upload", "deploy-oai")


def binary(name: str) -> str | None:
    """A system binary, also where /usr/sbin is not on PATH (nginx)."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def wait_for_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{proc.args[0]} is not listening on {port}") from None
            time.sleep(0.1)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def get(url: str, context: ssl.SSLContext | None = None, headers: dict[str, str] | None = None
        ) -> tuple[int, dict[str, str], bytes]:
    """One request without following redirects: status, headers, body."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect, urllib.request.HTTPSHandler(context=context))
    try:
        with opener.open(urllib.request.Request(url, headers=headers or {}), timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


class Nginx:
    """deploy/nginx.conf, its placeholders replaced, included by a minimal top-level config, run as a child."""

    def __init__(self, workdir: Path, upstream_port: int, pair: CertPair):
        self.dir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.http_port, self.https_port = free_port(), free_port()
        site = (DEPLOY / "nginx.conf").read_text()
        v6 = ipv6_loopback()
        replacements = {
            "listen 80;": f"listen 127.0.0.1:{self.http_port};",
            "listen [::]:80;": f"listen [::1]:{self.http_port};" if v6 else "",
            "listen 443 ssl;": f"listen 127.0.0.1:{self.https_port} ssl;",
            "listen [::]:443 ssl;": f"listen [::1]:{self.https_port} ssl;" if v6 else "",
            "/etc/letsencrypt/live/captions.example.edu/fullchain.pem": str(pair.cert),
            "/etc/letsencrypt/live/captions.example.edu/privkey.pem": str(pair.key),
            "captions.example.edu": "localhost",
            "127.0.0.1:8000": f"127.0.0.1:{upstream_port}",
        }
        for placeholder, value in replacements.items():  # in this order: the paths contain the host name
            assert placeholder in site, f"deploy/nginx.conf lost its placeholder {placeholder!r}"
            site = site.replace(placeholder, value)
        (workdir / "site.conf").write_text(site)
        user = "user root root;\n" if os.geteuid() == 0 else ""  # workers must reach the temp dirs below
        temp = "\n".join(f"    {kind}_temp_path {workdir / kind};" for kind in
                         ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        (workdir / "nginx.conf").write_text(
            f"{user}worker_processes 1;\nevents {{ worker_connections 256; }}\nhttp {{\n"
            f"    access_log {workdir / 'access.log'};\n{temp}\n    include {workdir / 'site.conf'};\n}}\n")
        exe = binary("nginx")
        assert exe is not None
        self.args = [exe, "-p", str(workdir), "-c", str(workdir / "nginx.conf"), "-e", "stderr",
                     "-g", f"pid {workdir / 'nginx.pid'}; error_log stderr;"]
        self.check = subprocess.run([*self.args, "-t"], capture_output=True, text=True, timeout=30)
        assert self.check.returncode == 0, self.check.stderr
        self.log = workdir / "nginx.log"
        self._log = open(self.log, "wb")
        self.proc = subprocess.Popen([*self.args[:-1], self.args[-1] + " daemon off;"], stdout=self._log,
                                     stderr=subprocess.STDOUT)
        wait_for_port(self.https_port, self.proc, self.log)
        self.https = f"https://127.0.0.1:{self.https_port}"
        self.wss = f"wss://127.0.0.1:{self.https_port}"

    def stop(self) -> None:
        stop(self.proc)
        self._log.close()


class Background:
    """An event loop of its own in a thread, for connections that must stay serviced (pings answered) between
    tests, while pytest's loop is not running."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="deploy-background", daemon=True)
        self.thread.start()

    def submit(self, coro: Any) -> concurrent.futures.Future:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def close(self) -> None:
        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self.submit(cancel_all()).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def nginx_exe() -> str:
    exe = binary("nginx")
    if exe is None:
        pytest.skip("nginx is not installed (make sysdeps installs Debian's nginx)")
    return exe


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> CertPair:
    return make_self_signed(tmp_path_factory.mktemp("tls"), ["localhost"], days=2)


@pytest.fixture(scope="module")
def trust(pair: CertPair) -> ssl.SSLContext:
    """A client context that trusts the test certificate (and nothing else)."""
    return ssl.create_default_context(cafile=str(pair.cert))


@pytest.fixture(scope="module")
def clip(clips: list[Clip]) -> Clip:
    return min(english(clips), key=lambda c: c.samples().size)


@pytest.fixture(scope="module")
def backend(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    srv = ServerProcess(cache_dir, tmp_path_factory.mktemp("deploy-backend") / "server.log",
                        env={"REALTIME_ADMIN_KEY": ADMIN})
    for room in ROOMS:
        req = urllib.request.Request(srv.http + "/v1/rooms", method="POST", headers={
            "Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"},
            data=json.dumps({"title": room, "room": room}).encode())
        with urllib.request.urlopen(req, timeout=10) as r:
            KEYS[room] = json.loads(r.read())["speaker_key"]
    yield srv
    srv.stop()


KEYS: dict[str, str | None] = {}  # speaker keys of the backend's rooms


@pytest.fixture(scope="module")
def nginx(nginx_exe: str, backend: ServerProcess, pair: CertPair, tmp_path_factory: pytest.TempPathFactory):
    proxy = Nginx(tmp_path_factory.mktemp("nginx"), backend.port, pair)
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def background():
    bg = Background()
    yield bg
    bg.close()


class Idle:
    """The two idle connections through nginx, opened as early as possible."""

    def __init__(self, background: Background, nginx: Nginx, trust: ssl.SSLContext, workdir: Path, pair: CertPair):
        self.background = background
        self.events: list[dict[str, Any]] = []
        self.started = time.monotonic()
        # 1. A realtime listener through nginx (the server and the client library both ping).
        self.listener = background.submit(listen(nginx.wss, IDLE_ROOM, on_event=self.events.append, ssl=trust))
        # 2. A WebSocket that never pings, through a second nginx from the same file, to an echo upstream that
        #    never pings either: only nginx's timeouts decide whether it survives.
        self.echo_port = free_port()

        async def echo(ws: Any) -> None:
            async for message in ws:
                await ws.send(message)

        async def serve_echo() -> Any:
            return await websockets.serve(echo, "127.0.0.1", self.echo_port, ping_interval=None)

        self.echo_server = background.submit(serve_echo()).result(10)
        self.quiet_nginx = Nginx(workdir, self.echo_port, pair)

        async def connect_quiet() -> Any:
            ws = await websockets.connect(f"{self.quiet_nginx.wss}/ws/quiet", ssl=trust, ping_interval=None)
            await ws.send("first")
            assert await asyncio.wait_for(ws.recv(), 10) == "first"
            return ws

        self.quiet = background.submit(connect_quiet()).result(20)
        deadline = time.monotonic() + 20
        while not any(e["type"] == "hello" for e in self.events):
            assert not self.listener.done(), self.listener.result()
            assert time.monotonic() < deadline, "the idle listener got no hello"
            time.sleep(0.1)

    def quiet_echo(self, message: str) -> str:
        async def roundtrip() -> str:
            await self.quiet.send(message)
            return await asyncio.wait_for(self.quiet.recv(), 10)

        return self.background.submit(roundtrip()).result(20)

    def close(self) -> None:
        async def shut() -> None:
            await self.quiet.close()
            self.echo_server.close()

        self.background.submit(shut()).result(10)
        self.quiet_nginx.stop()


@pytest.fixture(scope="module")
def idle(background: Background, nginx: Nginx, trust: ssl.SSLContext, pair: CertPair,
         tmp_path_factory: pytest.TempPathFactory):
    connections = Idle(background, nginx, trust, tmp_path_factory.mktemp("nginx-quiet"), pair)
    yield connections
    connections.close()


async def check_stream(server_url: str, room: str, clip: Clip, context: ssl.SSLContext) -> None:
    result = await stream_audio(server_url, room, clip.samples(), speed=0, language="en", ssl=context,
                                key=KEYS.get(room))
    assert result.finals, [e["type"] for e in result.events]
    assert wer(clip.reference, result.text) < 0.5, (clip.reference, result.text)


# nginx


async def test_through_nginx(nginx: Nginx, idle: Idle, clip: Clip, trust: ssl.SSLContext):
    assert "syntax is ok" in nginx.check.stderr and "test is successful" in nginx.check.stderr
    # port 80: everything to HTTPS, path and query kept ($host carries no port: 443 in a real deployment)
    status, headers, _ = get(f"http://127.0.0.1:{nginx.http_port}/healthz?ready=1")
    assert status == 301 and headers["Location"] == "https://127.0.0.1/healthz?ready=1"
    status, headers, body = get(nginx.https + "/healthz?ready=1", trust)
    assert status == 200 and json.loads(body)["ready"] is True
    assert headers.get("Strict-Transport-Security", "").startswith("max-age=")
    status, _, body = get(nginx.https + "/", trust)
    assert status == 200 and b"<realtime-captions" in body
    status, _, _ = get(nginx.https + "/metrics", trust)  # nginx lets 127.0.0.1 through; the server wants the key
    assert status == 401
    status, _, _ = get(nginx.https + "/metrics", trust, {"Authorization": f"Bearer {ADMIN}"})
    assert status == 200
    # a page the server served, seen through the proxy: its https origin matches the Host nginx passes on
    async with websockets.connect(nginx.wss + "/ws/listen/deploy-origin", ssl=trust,
                                  origin=nginx.https) as ws:
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "hello"
    await check_stream(nginx.wss, "deploy-nginx", clip, trust)
    deadline = time.monotonic() + 10  # an upgraded connection is logged when it ends
    while "GET /ws/speak/deploy-nginx HTTP/1.1\" 101" not in (nginx.dir / "access.log").read_text():
        assert time.monotonic() < deadline, (nginx.dir / "access.log").read_text()
        await asyncio.sleep(0.1)


async def test_audio_files_and_the_realtime_session_through_nginx(nginx: Nginx, clip: Clip, trust: ssl.SSLContext,
                                                                  tmp_path: Path):
    """What a site's nginx must let through beyond captions: a recorded lecture over its 1 MB default body limit,
    with a prompt whose URL-encoded request line passes 8 kB, and the OpenAI Realtime WebSockets (/v1/realtime,
    /v1/realtime/translations)."""
    samples = np.concatenate([clip.samples(), np.zeros(16000 * 40, np.float32)])  # 40 s of silence: over 1 MB
    path = tmp_path / "recorded.wav"
    write_wav(path, samples)
    assert path.stat().st_size > 1 << 20
    last = await upload_file(nginx.wss, "deploy-upload", str(path), key=KEYS["deploy-upload"], language="en",
                             prompt="é" * 2000, ssl=trust)
    assert last["type"] == "done" and last["finals"] >= 1, last
    status, _, body = get(nginx.https + "/v1/rooms/deploy-upload/export?format=txt", trust,
                          {"Authorization": f"Bearer {ADMIN}"})
    assert status == 200 and wer(clip.reference, body.decode()) < 0.5, body
    for path in ("/v1/realtime?intent=transcription&", "/v1/realtime/translations?model=x&"):
        async with websockets.connect(nginx.wss + path + "room=deploy-oai", ssl=trust, additional_headers={
                "Authorization": f"Bearer {KEYS['deploy-oai']}"}) as ws:
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "session.created"


# direct TLS


@pytest.fixture(scope="module")
def tls_server(cache_dir: Path, pair: CertPair, trust: ssl.SSLContext, tmp_path_factory: pytest.TempPathFactory):
    srv = ServerProcess(cache_dir, tmp_path_factory.mktemp("deploy-tls") / "server.log",
                        "--tls-cert", str(pair.cert), "--tls-key", str(pair.key), ssl_context=trust)
    yield srv
    srv.stop()


async def test_direct_tls(tls_server: ServerProcess, clip: Clip, trust: ssl.SSLContext):
    assert tls_server.url.startswith("wss://") and tls_server.health()["ready"] is True
    assert f"realtime serving on https://127.0.0.1:{tls_server.port}" in tls_server.log_path.read_text()
    await check_stream(tls_server.url, "deploy-tls", clip, trust)
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):  # nobody else vouches for it
        get(tls_server.http + "/healthz", ssl.create_default_context())


@pytest.mark.parametrize("case", ["missing certificate", "key of another certificate"])
def test_unusable_tls_files_stop_the_server_with_one_line(pair: CertPair, tmp_path: Path, case: str):
    other = make_self_signed(tmp_path / "other", [], days=1, local=[])
    cert, key, reason = {
        "missing certificate": (tmp_path / "missing.pem", pair.key, "cannot read the TLS certificate"),
        "key of another certificate": (pair.cert, other.key, "the key does not belong to the certificate"),
    }[case]
    env = {**os.environ, "REALTIME_CACHE_DIR": str(tmp_path / "cache"), "REALTIME_DB": ":memory:",
           "HF_HUB_OFFLINE": "1"}
    run = subprocess.run([sys.executable, "-m", "realtime", "serve", "--port", str(free_port()),
                          "--tls-cert", str(cert), "--tls-key", str(key)],
                         capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("realtime: ") and reason in lines[0], run.stderr
    assert "serving" not in run.stdout
    assert not (tmp_path / "cache").exists()  # refused before the model was touched


# Caddy


@pytest.fixture(scope="module")
def caddy_exe() -> str:
    exe = binary("caddy")
    if exe is None:
        pytest.skip("caddy is not installed (make sysdeps installs Debian's caddy)")
    return exe


def caddy_env(workdir: Path) -> dict[str, str]:
    """Caddy's data (certificates, its local CA) and autosaved config under the test's directory."""
    return {**os.environ, "HOME": str(workdir), "XDG_DATA_HOME": str(workdir / "data"),
            "XDG_CONFIG_HOME": str(workdir / "config")}


def test_caddyfile_validates(caddy_exe: str, tmp_path: Path):
    shutil.copy(DEPLOY / "Caddyfile", tmp_path / "Caddyfile")
    run = subprocess.run([caddy_exe, "validate", "--adapter", "caddyfile", "--config", str(tmp_path / "Caddyfile")],
                         capture_output=True, text=True, timeout=60, env=caddy_env(tmp_path))
    assert run.returncode == 0 and "Valid configuration" in run.stdout + run.stderr, run.stderr


async def test_through_caddy(caddy_exe: str, backend: ServerProcess, clip: Clip, tmp_path: Path):
    """The same Caddyfile, served on loopback ports with Caddy's internal CA instead of Let's Encrypt."""
    http_port, https_port = free_port(), free_port()
    site = (DEPLOY / "Caddyfile").read_text()
    for placeholder, value in {"captions.example.edu {": f"localhost:{https_port} {{",
                               "127.0.0.1:8000": f"127.0.0.1:{backend.port}"}.items():
        assert placeholder in site, f"deploy/Caddyfile lost its placeholder {placeholder!r}"
        site = site.replace(placeholder, value)
    options = (f"{{\n\tadmin off\n\tlocal_certs\n\tskip_install_trust\n\tdefault_bind 127.0.0.1\n"
               f"\thttp_port {http_port}\n\thttps_port {https_port}\n}}\n\n")
    (tmp_path / "Caddyfile").write_text(options + site)
    log = tmp_path / "caddy.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([caddy_exe, "run", "--adapter", "caddyfile", "--config", str(tmp_path / "Caddyfile")],
                                stdout=out, stderr=subprocess.STDOUT, env=caddy_env(tmp_path))
    try:
        wait_for_port(https_port, proc, log)
        root = tmp_path / "data" / "caddy" / "pki" / "authorities" / "local" / "root.crt"
        deadline = time.monotonic() + 20
        while not root.is_file():
            assert time.monotonic() < deadline, log.read_text()
            await asyncio.sleep(0.1)
        trust_caddy = ssl.create_default_context(cafile=str(root))
        base = f"https://localhost:{https_port}"
        status, body = 0, b""
        for _ in range(100):  # the site certificate is issued just after the port opens
            try:
                status, _, body = get(base + "/healthz?ready=1", trust_caddy)
                break
            except (urllib.error.URLError, ConnectionError):
                await asyncio.sleep(0.2)
        assert status == 200 and json.loads(body)["ready"] is True, log.read_text()[-3000:]
        status, headers, _ = get(f"http://localhost:{http_port}/healthz", None)
        assert status in (301, 308) and headers["Location"].startswith("https://localhost")  # 443 in production
        assert headers["Location"].endswith("/healthz")
        status, _, _ = get(base + "/metrics", trust_caddy)
        assert status == 401  # Caddy lets 127.0.0.1 through; the server wants the admin key
        status, _, _ = get(base + "/metrics", trust_caddy, {"Authorization": f"Bearer {ADMIN}"})
        assert status == 200
        await check_stream(f"wss://localhost:{https_port}", "deploy-caddy", clip, trust_caddy)
    finally:
        stop(proc)


# systemd


@pytest.fixture(scope="module")
def unit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if binary("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    text = (DEPLOY / "realtime.service").read_text()
    assert "/opt/realtime/.venv/bin/realtime" in text
    path = tmp_path_factory.mktemp("systemd") / "realtime.service"
    # verify checks that the command exists: point it at this checkout's
    path.write_text(text.replace("/opt/realtime/.venv/bin/realtime", str(Path(sys.executable).parent / "realtime")))
    return path


def test_systemd_unit_verifies(unit: Path):
    run = subprocess.run([binary("systemd-analyze"), "verify", str(unit)], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0 and not run.stderr.strip(), run.stderr  # unknown keys are only warnings
    run = subprocess.run([binary("systemd-analyze"), "security", "--offline=yes", "--threshold=30", str(unit)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr  # exposure 3.0 or less


def test_systemd_unit_refuses_open_rooms_behind_a_proxy(unit: Path):
    """ExecStartPre: on loopback (behind a proxy) the service needs an admin key, else rooms would be open."""
    text = unit.read_text().replace("\\\n", " ")  # systemd joins continued lines with a space
    line = next(x for x in text.splitlines() if x.startswith("ExecStartPre="))
    argv = shlex.split(line.split("=", 1)[1].replace("$$", "$"))  # $$: a literal $ after systemd's expansion
    cases = [({"REALTIME_HOST": "127.0.0.1"}, 2), ({"REALTIME_HOST": "127.0.0.1", "REALTIME_ADMIN_KEY": "ak_x"}, 0),
             ({"REALTIME_HOST": "0.0.0.0"}, 0), ({}, 2)]
    for env, code in cases:
        run = subprocess.run(argv, env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True, timeout=10)
        assert run.returncode == code, (env, run.stderr)
        assert (code == 0) == (run.stderr == ""), run.stderr


# last: after two minutes, both idle connections are still there


async def test_idle_connections_survive_nginx(idle: Idle, nginx: Nginx, clip: Clip, trust: ssl.SSLContext):
    remaining = IDLE_S - (time.monotonic() - idle.started)
    if remaining > 0:
        await asyncio.sleep(remaining)
    assert not idle.listener.done(), f"the idle listener was disconnected: {idle.listener.result().close_code}"
    try:  # more than 60 s without a single frame either way
        echoed = idle.quiet_echo("still there?")
    except (websockets.ConnectionClosed, OSError, TimeoutError) as exc:
        pytest.fail(f"nginx closed a WebSocket that was quiet for {IDLE_S:.0f} s (proxy_read_timeout / "
                    f"proxy_send_timeout too short?): {exc!r}")
    assert echoed == "still there?"
    heard_before = len(idle.events)
    await check_stream(nginx.wss, IDLE_ROOM, clip, trust)
    deadline = time.monotonic() + 30
    while not any(e["type"] == "final" for e in idle.events[heard_before:]):
        assert time.monotonic() < deadline, [e["type"] for e in idle.events]
        await asyncio.sleep(0.1)
    assert not idle.listener.done()
