/* The lecturer page: microphone → AudioWorklet (16 kHz s16le packets) → the room's speaker WebSocket.
 *
 * The microphone and the socket live independently: capture never waits for the network. While the socket is
 * down (a Wi-Fi blip, a server restart, a full server) packets queue in a bounded buffer and are sent, oldest
 * first, as soon as the next connection's `start` is accepted, so a short outage loses no speech.
 */
"use strict";

const $ = (id) => document.getElementById(id);
const PACKET_MS = 50;
const MAX_BUFFER_S = 120; // audio kept while disconnected; older packets are dropped beyond this
const BYTES_PER_S = 32000;
const PROTOCOL = globalThis.RealtimeProtocol; // static/protocol.js: close codes and what they mean

const speaker = (window.realtimeSpeaker = {
  running: false, // the lecturer pressed Start and has not pressed Stop
  stopping: false,
  live: false, // the current socket's `start` was accepted: packets go straight out
  wasLive: false, // a `start` of this run was accepted: a reconnect continues our own lecture (takeover)
  ws: null,
  retry: 0,
  timer: 0,
  buffer: [], // ArrayBuffers waiting for a live socket
  bufferedBytes: 0,
  droppedBytes: 0,
  sentBytes: 0,
  capturedBytes: 0,
  t0: 0, // wall-clock ms of the first captured sample (lecture time 0 of this page's stream)
  mic: null, // {stream, ctx, node}
});

function message(text, kind = "warn") {
  const m = $("message");
  m.hidden = !text;
  m.className = kind;
  m.replaceChildren();
  if (text instanceof Node) m.append(text); else m.textContent = text || "";
}

function conn(state, text) {
  $("conn").dataset.state = state;
  $("conn").textContent = text;
}

function room() { return $("room").value.trim(); }

// ------------------------------------------------------------------ microphone

function micProblem(err) {
  const name = err && err.name;
  if (name === "NotAllowedError" || name === "SecurityError") {
    return "The browser refused the microphone. Click the camera/microphone or lock icon in the address bar, "
      + "allow the microphone for this site, then press Start again.";
  }
  if (name === "NotFoundError" || name === "OverconstrainedError") {
    return "No microphone was found. Plug one in (or pick another one under Microphone) and press Start again.";
  }
  if (name === "NotReadableError" || name === "AbortError") {
    return "The microphone could not be opened: another application may be using it, or the system blocks it.";
  }
  return `The microphone could not be started (${name || "error"}: ${(err && err.message) || err}).`;
}

function insecureContextMessage() {
  const p = document.createElement("span");
  p.append("The microphone only works on a secure page, and this one was loaded over plain HTTP from ",
           Object.assign(document.createElement("b"), { textContent: location.host }),
           ". Open it over HTTPS (the Deployment section of the realtime README shows how: a reverse proxy with a "
           + "certificate, or a self-signed one on a LAN), or open it as http://localhost on the machine that runs "
           + "the server.");
  return p;
}

async function openMic(deviceId) {
  const audio = { echoCancellation: false, noiseSuppression: false, autoGainControl: false, channelCount: 1 };
  if (deviceId) audio.deviceId = { exact: deviceId };
  const stream = await navigator.mediaDevices.getUserMedia({ audio });
  const ctx = new AudioContext(); // the device's own rate; the worklet resamples to 16 kHz
  try {
    await ctx.audioWorklet.addModule("/static/pcm-worklet.js");
    const node = new AudioWorkletNode(ctx, "pcm-capture", { processorOptions: { packetMs: PACKET_MS } });
    const mute = ctx.createGain();
    mute.gain.value = 0; // keep the graph pulled without playing the lecturer back to themselves
    ctx.createMediaStreamSource(stream).connect(node).connect(mute).connect(ctx.destination);
    node.port.onmessage = (e) => onPacket(e.data);
    if (ctx.state === "suspended") await ctx.resume();
    return { stream, ctx, node };
  } catch (err) {
    stream.getTracks().forEach((t) => t.stop());
    ctx.close();
    throw err;
  }
}

function closeMic() {
  const mic = speaker.mic;
  speaker.mic = null;
  if (!mic) return;
  mic.stream.getTracks().forEach((t) => t.stop());
  mic.ctx.close();
}

async function listDevices() {
  const devices = (await navigator.mediaDevices.enumerateDevices()).filter((d) => d.kind === "audioinput");
  const select = $("device"), chosen = select.value;
  select.replaceChildren(new Option("default microphone", ""),
                         ...devices.filter((d) => d.deviceId && d.deviceId !== "default")
                           .map((d, i) => new Option(d.label || `microphone ${i + 1}`, d.deviceId)));
  select.value = [...select.options].some((o) => o.value === chosen) ? chosen : "";
}

function onPacket(packet) {
  if (packet.pcm) {
    if (!speaker.t0) speaker.t0 = Date.now() - (packet.pcm.byteLength / BYTES_PER_S) * 1000;
    speaker.capturedBytes += packet.pcm.byteLength;
    meter(packet.peak);
    send(packet.pcm);
  }
  if (packet.last) finishStop();
}

function meter(peak) {
  const db = 20 * Math.log10(Math.max(peak, 1e-6));
  const level = Math.max(0, Math.min(1, (db + 60) / 60));
  $("meter").firstElementChild.style.width = `${Math.round(level * 100)}%`;
  $("meter").classList.toggle("hot", peak > 0.98);
  $("meter").setAttribute("aria-valuenow", level.toFixed(2));
}

// ------------------------------------------------------------------ socket

function send(pcm) {
  if (speaker.live && speaker.ws && speaker.ws.readyState === WebSocket.OPEN) {
    speaker.ws.send(pcm);
    speaker.sentBytes += pcm.byteLength;
    return;
  }
  speaker.buffer.push(pcm);
  speaker.bufferedBytes += pcm.byteLength;
  while (speaker.bufferedBytes > MAX_BUFFER_S * BYTES_PER_S) {
    const old = speaker.buffer.shift();
    speaker.bufferedBytes -= old.byteLength;
    speaker.droppedBytes += old.byteLength;
  }
}

function flushBuffer() {
  const pending = speaker.buffer;
  speaker.buffer = [];
  speaker.bufferedBytes = 0;
  for (const pcm of pending) send(pcm);
  if (speaker.droppedBytes) {
    message(`The connection was down too long: the oldest ${(speaker.droppedBytes / BYTES_PER_S).toFixed(0)} s `
            + "of audio could not be kept.");
  }
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.host}/ws/speak/${encodeURIComponent(room())}`);
  ws.binaryType = "arraybuffer";
  speaker.ws = ws;
  speaker.live = false;
  conn("connecting", "connecting…");
  ws.onopen = () => {
    const language = $("language").value, key = $("key").value.trim();
    // The key goes in the first message, never in the URL (proxies log URLs). A reconnect of this page's own
    // lecture takes the room over: the server may not have noticed yet that the old connection is gone.
    if (key) ws.send(JSON.stringify({ type: "auth", key }));
    ws.send(JSON.stringify({ type: "start", language: language === "auto" ? null : language,
                             task: $("task").value, prompt: $("glossary").value, takeover: speaker.wasLive }));
  };
  ws.onmessage = (m) => {
    if (typeof m.data !== "string" || speaker.ws !== ws) return;
    const ev = JSON.parse(m.data);
    if (ev.type === "status" && ev.state === "live" && !speaker.live) {
      speaker.live = true;
      speaker.wasLive = true;
      speaker.retry = 0;
      conn("live", "live");
      if (!speaker.droppedBytes) message("");
      flushBuffer();
      if (speaker.stopping && !speaker.mic) sendStop();
    } else if (ev.type === "status" && ev.state === "stopped" && speaker.stopping && speaker.live) {
      ws.close(PROTOCOL.CLOSE.NORMAL);
      done();
    } else if (ev.type === "error") {
      serverError(ev);
    }
  };
  ws.onclose = (e) => {
    if (speaker.ws !== ws) return;
    speaker.ws = null;
    speaker.live = false;
    if (!speaker.running) return;
    if (PROTOCOL.PERMANENT.includes(e.code) || e.reason === "taken_over") {
      fail(closeText(e.code, e.reason));
      return;
    }
    const delay = Math.min(10000, 500 * 2 ** speaker.retry++) * (0.8 + 0.4 * Math.random());
    const secs = Math.max(1, Math.round(delay / 1000));
    conn("reconnecting", `reconnecting in ${secs} s`);
    if (e.code === PROTOCOL.CLOSE.TRY_AGAIN || e.code === PROTOCOL.CLOSE.SPEAKER_EXISTS || speaker.mic) {
      message(closeText(e.code, e.reason, secs));
    }
    speaker.timer = setTimeout(connect, delay);
  };
}

function closeText(code, reason, secs) {
  if (reason === "taken_over") return PROTOCOL.TAKEN_OVER_TEXT;
  const text = PROTOCOL.SPEAKER_TEXT[code] || PROTOCOL.SPEAKER_TEXT[PROTOCOL.CLOSE.NORMAL];
  const values = { room: room(), origin: location.origin, secs };
  return text.replace(/\{(room|origin|secs)\}/g, (_, name) => String(values[name]));
}

function serverError(ev) {
  if (["server_full", "speaker_exists", "origin_not_allowed", "bad_room", "key_required", "bad_key",
       "no_such_room", "taken_over", "lecture_too_long"].includes(ev.code)) return; // explained at the close
  message(`The server reported: ${ev.message}`, "error");
}

// ------------------------------------------------------------------ start / stop

async function start() {
  if (!window.isSecureContext || !navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    message(insecureContextMessage(), "error");
    return;
  }
  if (!room()) { message("Enter a room name first.", "error"); return; }
  $("go").disabled = true;
  message("");
  try {
    speaker.mic = await openMic($("device").value);
  } catch (err) {
    $("go").disabled = false;
    message(micProblem(err), "error");
    return;
  }
  Object.assign(speaker, { running: true, stopping: false, wasLive: false, retry: 0, t0: 0, buffer: [],
                           bufferedBytes: 0, droppedBytes: 0, sentBytes: 0, capturedBytes: 0 });
  listDevices().catch(() => {});
  for (const id of ["room", "language", "task", "glossary"]) $(id).disabled = true;
  $("go").textContent = "Stop";
  $("go").classList.add("stop");
  $("go").disabled = false;
  $("captions").setAttribute("room", room());
  const link = Object.assign(document.createElement("a"), { href: `/?room=${encodeURIComponent(room())}` });
  link.textContent = `${location.origin}/?room=${room()}`;
  $("viewer-link").replaceChildren("Students watch at ", link);
  history.replaceState(null, "", `?room=${encodeURIComponent(room())}`);
  connect();
}

function stop() {
  speaker.stopping = true;
  $("go").disabled = true;
  $("go").textContent = "Finishing…";
  if (speaker.mic) speaker.mic.node.port.postMessage("flush"); // the worklet answers with the last packet
  else finishStop();
}

function finishStop() {
  closeMic();
  meter(0);
  if (speaker.live) sendStop();
  // Otherwise the next accepted `start` flushes the buffer and then sends `stop`.
}

function sendStop() {
  speaker.ws.send(JSON.stringify({ type: "stop" }));
}

function fail(text) {
  message(text, "error");
  closeMic();
  done();
}

function done() {
  clearTimeout(speaker.timer);
  Object.assign(speaker, { running: false, stopping: false, live: false });
  if (speaker.ws) { const ws = speaker.ws; speaker.ws = null; ws.close(PROTOCOL.CLOSE.NORMAL); }
  conn("idle", "stopped");
  for (const id of ["room", "language", "task", "glossary"]) $(id).disabled = false;
  $("go").textContent = "Start captions";
  $("go").classList.remove("stop");
  $("go").disabled = false;
}

$("controls").onsubmit = (e) => {
  e.preventDefault();
  if (speaker.running) stop(); else start();
};
$("device").onchange = async () => {
  if (!speaker.mic || speaker.stopping) return;
  try {
    const next = await openMic($("device").value);
    closeMic();
    speaker.mic = next;
  } catch (err) {
    message(micProblem(err), "error");
  }
};
window.addEventListener("beforeunload", (e) => { if (speaker.running) e.preventDefault(); });

const initial = new URLSearchParams(location.search).get("room");
if (initial) $("room").value = initial;
if (!window.isSecureContext || !navigator.mediaDevices) message(insecureContextMessage(), "error");

// ------------------------------------------------------------------ recorded lectures (docs/protocol.md)
//
// POST /v1/rooms/{room}/upload with the file as the body, through XMLHttpRequest: its upload events give the
// sending progress, and the answer's NDJSON lines (accepted, progress…, then done | cancelled | error) arrive as
// it goes, for the transcription progress. The same room and key as the microphone.

const upload = (window.realtimeUpload = { xhr: null, state: "idle", last: null, sentBytes: 0 });

function uploadShow(text, fraction) {
  $("upload-state").textContent = text;
  $("upload-progress").value = Math.max(0, Math.min(1, fraction));
}

function uploadDone(state) {
  upload.state = state;
  upload.xhr = null;
  $("upload-go").disabled = false;
  $("upload-cancel").hidden = true;
  $("go").disabled = false;
}

function uploadLines(xhr, seen) {
  const lines = xhr.responseText.split("\n");
  for (let i = seen; i < lines.length - 1; i++) {
    if (!lines[i].trim()) continue;
    const line = JSON.parse(lines[i]);
    upload.last = line;
    const pct = line.total_s ? line.done_s / line.total_s : 0;
    if (line.type === "accepted" || line.type === "progress") {
      upload.state = "transcribing";
      uploadShow(`transcribing ${Math.round(pct * 100)} % · ${line.finals} lines`, pct);
    } else if (line.type === "done") {
      uploadShow(`done · ${line.finals} lines from ${Math.round(line.total_s)} s of audio`, 1);
      uploadDone("done");
    } else if (line.type === "cancelled") {
      uploadShow(`cancelled at ${Math.round(line.done_s)} s · ${line.finals} lines kept`, pct);
      uploadDone("cancelled");
    } else if (line.type === "error") {
      message(`The recording could not be transcribed: ${line.error ? line.error.message : "error"}`, "error");
      uploadDone("failed");
    }
  }
  return Math.max(seen, lines.length - 1);
}

function uploadRefused(xhr) {
  let text = `HTTP ${xhr.status}`;
  try { text = JSON.parse(xhr.responseText).message || text; } catch (_) { /* not JSON: keep the status */ }
  const why = { 401: "This room needs its speaker key: paste it into the Speaker key field.",
                404: `There is no room “${room()}” on this server: create it with realtime room create.`,
                409: "This room is busy (live, or transcribing another recording).",
                413: "The recording is too long or too large for this server.",
                415: "That file is not audio this server can read." }[xhr.status];
  message(why ? `${why} (${text})` : `The upload was refused: ${text}`, "error");
  uploadShow("refused", 0);
  uploadDone("refused");
}

function startUpload() {
  const file = $("upload-file").files[0];
  if (!file) { message("Choose a recording first.", "error"); return; }
  if (!room()) { message("Enter a room name first.", "error"); return; }
  if (speaker.running) { message("Stop the live captions before uploading a recording.", "error"); return; }
  message("");
  const language = $("language").value, key = $("key").value.trim();
  const q = new URLSearchParams({ task: $("task").value });
  if (language !== "auto") q.set("language", language);
  if ($("glossary").value) q.set("prompt", $("glossary").value);
  const xhr = new XMLHttpRequest();
  upload.xhr = xhr;
  upload.state = "uploading";
  upload.last = null;
  let seen = 0;
  xhr.open("POST", `/v1/rooms/${encodeURIComponent(room())}/upload?${q}`);
  if (key) xhr.setRequestHeader("Authorization", `Bearer ${key}`); // a header, never the URL
  xhr.setRequestHeader("Content-Type", /^(audio|video)\//.test(file.type) ? file.type : "application/octet-stream");
  xhr.upload.onprogress = (e) => {
    upload.sentBytes = e.loaded;
    if (e.lengthComputable) uploadShow(`uploading ${Math.round((100 * e.loaded) / e.total)} %`, e.loaded / e.total);
  };
  xhr.upload.onload = () => uploadShow("checking the recording…", 0);
  xhr.onprogress = () => { if (xhr.status === 200) seen = uploadLines(xhr, seen); };
  xhr.onload = () => {
    if (xhr.status !== 200) { uploadRefused(xhr); return; }
    seen = uploadLines(xhr, seen);
    if (upload.xhr === xhr) { message("The server ended the upload early.", "error"); uploadDone("failed"); }
  };
  xhr.onerror = () => {
    if (upload.xhr !== xhr) return;
    message("The connection to the server broke during the upload; finals so far are kept.", "error");
    uploadDone("failed");
  };
  xhr.send(file);
  $("upload-go").disabled = true;
  $("go").disabled = true;
  $("upload-cancel").hidden = false;
  $("captions").setAttribute("room", room());
  const link = Object.assign(document.createElement("a"), { href: `/?room=${encodeURIComponent(room())}` });
  link.textContent = `${location.origin}/?room=${room()}`;
  $("viewer-link").replaceChildren("Students watch at ", link);
  uploadShow("uploading 0 %", 0);
}

function cancelUpload() {
  const xhr = upload.xhr;
  if (!xhr) return;
  if (upload.state !== "transcribing") { xhr.abort(); uploadShow("cancelled", 0); uploadDone("cancelled"); return; }
  const key = $("key").value.trim();
  fetch(`/v1/rooms/${encodeURIComponent(room())}/upload`,
        { method: "DELETE", headers: key ? { Authorization: `Bearer ${key}` } : {} })
    .catch(() => xhr.abort()); // the answer's last line (cancelled) ends it; failing that, closing the request does
}

$("upload-go").onclick = startUpload;
$("upload-cancel").onclick = cancelUpload;
