/* realtime live captions widget. One tag on any page:
 *
 *   <script src="https://captions.example.edu/static/widget.js" data-room="physics-101" async></script>
 *
 * inserts a <realtime-captions> element where the script stands (or use the element yourself, after loading the
 * script once):
 *
 *   <realtime-captions server="https://captions.example.edu" room="physics-101" mode="both" height="24rem"
 *                      theme="auto" lang-label="EN"></realtime-captions>
 *
 * Attributes: server (default: where this script came from), room, mode, height (any CSS length; default 100% of
 * the box), theme (auto | light | dark), lang-label (a short tag shown in the header),
 * font-size (CSS length), translate (a language code such as zh or de: each line also in that language, made by
 * the server's LLM), translation (both | only: the original with its translation under it, or the translation
 * alone; default both). mode: captions (default), notes, both (the captions with a study column: catch me up,
 * outline, notes, key terms, tasks), study (that column alone), or any of catchup, outline, notes, terms, tasks,
 * captions separated by spaces ("captions tasks"). Everything renders inside a Shadow DOM, so neither the host
 * page's CSS nor ours leaks.
 * The server must list the host page's origin in --allowed-origins (close code 4403 otherwise).
 *
 * Events: the element dispatches `realtime-event` (detail: the protocol event, docs/protocol.md) for every message.
 * Methods: transcript() returns the captions so far as text with times; catchUp() asks for a recap of the
 * lecture so far and streams it into the catch-up section.
 */
(() => {
  "use strict";
  if (customElements.get("realtime-captions")) return;
  const scriptOrigin = document.currentScript ? new URL(document.currentScript.src, location.href).origin : "";

  const CSS = `
  :host { all: initial; display: block; container-type: inline-size; height: var(--rt-height, 100%);
          --rt-fg: #111; --rt-bg: #fafafa; --rt-dim: #6b6b6b; --rt-line: #8884; --rt-accent: #2563eb; }
  :host([theme="dark"]) { --rt-fg: #ececec; --rt-bg: #141414; --rt-dim: #9a9a9a; --rt-accent: #60a5fa; }
  @media (prefers-color-scheme: dark) {
    :host(:not([theme="light"])) { --rt-fg: #ececec; --rt-bg: #141414; --rt-dim: #9a9a9a; --rt-accent: #60a5fa; }
  }
  [hidden] { display: none !important; }
  /* Set here, not on :host: a host page's !important rules win on the host element and would be inherited. */
  .box { box-sizing: border-box; height: 100%; display: grid; grid-template-rows: auto minmax(0, 1fr);
         background: var(--rt-bg); color: var(--rt-fg); border-radius: 6px; overflow: hidden; text-align: left;
         font: 16px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; letter-spacing: normal; }
  .bar { display: flex; gap: .5em; align-items: center; padding: .35em .8em; font-size: 13px; color: var(--rt-dim);
         border-bottom: 1px solid var(--rt-line); }
  .bar .live { width: .55em; height: .55em; border-radius: 50%; background: var(--rt-dim); }
  .bar .live.on { background: #dc2626; }
  .bar .lang { margin-left: auto; font-weight: 600; }
  .panes { display: grid; grid-template-columns: minmax(0, 1fr); min-height: 0; }
  @container (min-width: 52rem) { .panes.both { grid-template-columns: minmax(0, 1fr) minmax(16rem, 30%); } }
  .captions { position: relative; min-height: 0; display: grid; }
  .scroll { overflow-y: auto; padding: .6em 1em 1.5em; font-size: var(--rt-font-size, 1.35rem);
            overscroll-behavior: contain; }
  .final { margin: 0 0 .55em; }
  .final time { color: var(--rt-dim); font-size: .55em; margin-right: .6em; font-variant-numeric: tabular-nums; }
  .partial { margin: 0; min-height: 1.45em; }
  .unstable { color: var(--rt-dim); }
  .tr { display: block; color: var(--rt-accent); font-size: .85em; }
  .final.pending .tr::after { content: "translating…"; color: var(--rt-dim); font-size: .75em; }
  .final.untranslated .tr::after { content: "not translated"; color: var(--rt-dim); font-size: .75em; }
  :host([translation="only"]) .final.translated .orig { display: none; }
  :host([translation="only"]) .final.translated .tr { color: inherit; font-size: 1em; display: inline; }
  .empty { color: var(--rt-dim); font-size: 15px; }
  .jump { position: absolute; right: 1em; bottom: .8em; font: 600 13px system-ui, sans-serif; border: 0;
          border-radius: 99px; padding: .45em .9em; background: var(--rt-accent); color: #fff; cursor: pointer;
          box-shadow: 0 2px 8px #0004; }
  .notes { overflow-y: auto; padding: .6em 1em; border-left: 1px solid var(--rt-line); font-size: 15px; }
  .panes:not(.both) .notes { border-left: 0; }
  @container (max-width: 52rem) { .panes.both .notes { border-left: 0; border-top: 1px solid var(--rt-line); } }
  .notes h2 { font-size: 12px; text-transform: uppercase; letter-spacing: .06em; color: var(--rt-dim); margin: .2em 0; }
  .notes h2 small { text-transform: none; letter-spacing: 0; font-weight: normal; }
  .notes ul { margin: .2em 0; padding-left: 1.2em; } .notes li { margin: .2em 0; }
  .sec + .sec { margin-top: .9em; }
  .sec.terms li, .sec.tasks li { list-style: none; margin-left: -1.2em; }
  .sec .t { border: 0; background: none; padding: 0 .3em 0 0; color: var(--rt-accent); cursor: pointer;
            font: 12px system-ui, sans-serif; font-variant-numeric: tabular-nums; }
  .sec .kind { font-size: 11px; text-transform: uppercase; color: var(--rt-dim); margin-right: .3em; }
  .sec .due { font-weight: 600; }
  .catchup button { font: 600 13px system-ui, sans-serif; border: 1px solid var(--rt-line); border-radius: 99px;
                    padding: .3em .9em; background: none; color: var(--rt-fg); cursor: pointer; }
  .recap p { margin: .3em 0; } .recap .meta { color: var(--rt-dim); font-size: 12px; }
  .final.flash { background: color-mix(in srgb, var(--rt-accent) 18%, transparent); transition: background 1s; }
  `;

  const clock = (s) => {
    const t = Math.max(0, Math.floor(s)), h = Math.floor(t / 3600), m = Math.floor(t / 60) % 60;
    return `${h}:${String(m).padStart(2, "0")}:${String(t % 60).padStart(2, "0")}`;
  };
  const short = (s) => (s < 3600 ? clock(s).slice(2).replace(/^0(?=\d:)/, "") : clock(s)); // 1:05, 12:05, 1:02:05
  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  };
  /** Bullet text with **bold** rendered, everything else as text (never innerHTML of server data). */
  const inline = (li, text) => {
    text.split(/(\*\*[^*]+\*\*)/).forEach((part) => {
      li.append(part.startsWith("**") && part.endsWith("**") && part.length > 4 ? el("strong", "", part.slice(2, -2))
                                                                            : document.createTextNode(part));
    });
  };
  // Close codes after which reconnecting cannot help, and what the widget then says: a copy of static/protocol.js
  // (PERMANENT, VIEWER_TEXT), kept here so that the widget stays one file; tests/core/test_static.py compares them.
  const PERMANENT = [4400, 4401, 4403, 4404, 4413];
  const CLOSE_TEXT = {
    4400: "invalid room name",
    4401: "this room is private: open it with the viewer link that carries its key",
    4403: "this site may not show these captions (ask the server to allow it)",
    4404: "there is no such room",
    4413: "the lecture reached the server's maximum length",
  };

  class RealtimeCaptions extends HTMLElement {
    static get observedAttributes() {
      return ["server", "room", "key", "mode", "height", "font-size", "lang-label", "translate", "translation"];
    }

    constructor() {
      super();
      const root = this.attachShadow({ mode: "open" });
      root.innerHTML = `<style>${CSS}</style><div class="box" part="box">
        <div class="bar"><span class="live"></span><span class="state">not connected</span>
          <span class="lang"></span></div>
        <div class="panes"><div class="captions"><div class="scroll" aria-live="polite">
          <div class="finals"><p class="empty">Waiting for the lecture to begin…</p></div>
          <p class="partial"><span class="committed"></span> <span class="unstable"></span></p></div>
          <button class="jump" hidden>Jump to live ↓</button></div>
          <aside class="notes" hidden>
          <section class="sec catchup"><button class="ask">Catch me up</button><div class="recap"></div></section>
          <section class="sec outline"><h2>Outline</h2><ul></ul></section>
          <section class="sec bullets-sec"><h2>Notes <small class="source"></small></h2><ul class="bullets"></ul>
          <p class="empty no-notes">Notes appear here as the lecture goes on.</p></section>
          <section class="sec terms"><h2>Key terms</h2><ul></ul></section>
          <section class="sec tasks"><h2>Assignments &amp; deadlines</h2><ul></ul></section></aside></div></div>`;
      const q = (s) => root.querySelector(s);
      this.$ = { live: q(".live"), state: q(".state"), lang: q(".lang"), panes: q(".panes"), scroll: q(".scroll"),
        finals: q(".finals"), committed: q(".committed"), unstable: q(".unstable"), jump: q(".jump"),
        captions: q(".captions"), notes: q(".notes"), source: q(".source"), bullets: q(".bullets"),
        noNotes: q(".no-notes"), recap: q(".recap"), askRecap: q(".catchup .ask") };
      this.sections = { catchup: q(".catchup"), outline: q(".outline"), notes: q(".bullets-sec"), terms: q(".terms"),
        tasks: q(".tasks") };
      this.$.askRecap.addEventListener("click", () => this.catchUp());
      root.addEventListener("click", (e) => { // a time link: the caption it points to, scrolled into view
        const id = e.target.dataset && e.target.dataset.final;
        if (id !== undefined) this.showFinal(Number(id));
      });
      this.ws = null;
      this.retry = 0;
      this.timer = 0;
      this.follow = true;
      this.finals = new Map(); // final id -> event: a reconnect replays history, ids keep it free of duplicates
      this.translations = new Map(); // final id -> translation event (in the language asked for)
      this.translating = null; // the language the server agreed to translate into (hello.translate)
      this.lastSeq = 0; // the newest room event seen: a reconnect asks for what came after it
      this.$.scroll.addEventListener("scroll", () => {
        const s = this.$.scroll, atEnd = s.scrollHeight - s.scrollTop - s.clientHeight < 48;
        if (atEnd !== this.follow) { this.follow = atEnd; this.$.jump.hidden = atEnd; }
      }, { passive: true });
      this.$.jump.addEventListener("click", () => this.jumpToLive());
    }

    connectedCallback() { this.render(); this.connect(); }
    disconnectedCallback() { this.disconnect(); }

    attributeChangedCallback(name, old, value) {
      if (old === value || !this.isConnected) return;
      if (["server", "room", "key", "translate"].includes(name)) { this.reset(); this.connect(); }
      else this.render();
    }

    /** What the mode shows: "captions" and the study sections (catchup, outline, notes, terms, tasks). */
    get shown() {
      const all = ["catchup", "outline", "notes", "terms", "tasks"];
      const words = (this.getAttribute("mode") || "captions").split(/[\s,]+/).flatMap((w) =>
        w === "both" ? ["captions", ...all] : w === "study" ? all : [w]);
      const known = words.filter((w) => w === "captions" || all.includes(w));
      return new Set(known.length ? known : ["captions"]);
    }

    render() {
      const shown = this.shown, height = this.getAttribute("height"), size = this.getAttribute("font-size");
      this.style.setProperty("--rt-height", height || "100%");
      if (size) this.style.setProperty("--rt-font-size", size); else this.style.removeProperty("--rt-font-size");
      this.$.captions.hidden = !shown.has("captions");
      this.$.panes.classList.toggle("both", shown.has("captions") && shown.size > 1);
      this.$.lang.textContent = this.getAttribute("lang-label") || "";
      this.showNotesPane();
    }

    showNotesPane() {
      const shown = this.shown, some = this.$.bullets.childElementCount > 0, beside = shown.has("captions");
      this.$.noNotes.hidden = some;
      let any = false;
      for (const [name, sec] of Object.entries(this.sections)) {
        const filled = name === "catchup" ? Boolean(this.getAttribute("room")) : name === "notes" ? some
          : sec.querySelector("ul").childElementCount > 0;
        // Beside the captions an empty section is hidden; alone, it says what will appear (notes) or waits.
        sec.hidden = !shown.has(name) || (beside && !filled) || (!beside && name !== "notes" && !filled &&
                                                                  name !== "catchup");
        any = any || !sec.hidden;
      }
      this.$.notes.hidden = !any;
    }

    showFinal(id) {
      const p = this.$.finals.querySelector(`.final[data-id="${id}"]`);
      if (!p) return;
      this.follow = false;
      this.$.jump.hidden = false;
      p.scrollIntoView({ block: "center" });
      p.classList.add("flash");
      setTimeout(() => p.classList.remove("flash"), 1500);
    }

    url() {
      const base = new URL(this.getAttribute("server") || scriptOrigin || location.origin, location.href);
      base.protocol = base.protocol === "https:" ? "wss:" : "ws:";
      base.pathname = `/ws/listen/${encodeURIComponent(this.getAttribute("room") || "")}`;
      const query = new URLSearchParams();
      if (this.lastSeq) query.set("since", this.lastSeq);
      if (this.getAttribute("translate")) query.set("translate", this.getAttribute("translate"));
      base.search = query.toString() ? `?${query}` : "";
      return base.href;
    }

    connect() {
      this.disconnect();
      if (!this.getAttribute("room")) { this.state("no room given"); return; }
      const ws = new WebSocket(this.url());
      this.ws = ws;
      this.state("connecting…");
      ws.onopen = () => {
        this.retry = 0;
        this.state("connected");
        // A private room's key goes in the first message, never in the URL (proxies log URLs).
        const key = this.getAttribute("key");
        if (key) ws.send(JSON.stringify({ type: "auth", key }));
      };
      ws.onmessage = (m) => { if (this.ws === ws) this.onEvent(JSON.parse(m.data)); };
      ws.onclose = (e) => {
        if (this.ws !== ws) return; // replaced or disconnected on purpose
        this.ws = null;
        this.$.live.classList.remove("on");
        if (PERMANENT.includes(e.code)) { this.state(CLOSE_TEXT[e.code]); return; }
        const delay = Math.min(15000, 500 * 2 ** this.retry++) * (0.8 + 0.4 * Math.random());
        this.state(`reconnecting in ${Math.max(1, Math.round(delay / 1000))} s`);
        this.timer = setTimeout(() => this.connect(), delay);
      };
    }

    disconnect() {
      clearTimeout(this.timer);
      const ws = this.ws;
      this.ws = null;
      if (ws) ws.close();
    }

    reset() {
      this.finals.clear();
      this.translations.clear();
      this.lastSeq = 0;
      this.$.finals.replaceChildren(el("p", "empty", "Waiting for the lecture to begin…"));
      this.setPartial("", "");
      this.$.bullets.replaceChildren();
      for (const name of ["outline", "terms", "tasks"]) this.sections[name].querySelector("ul").replaceChildren();
      this.$.recap.replaceChildren();
      this.showNotesPane();
    }

    state(text) { this.$.state.textContent = text; }

    onEvent(ev) {
      if (!["hello", "error", "pong"].includes(ev.type)) this.lastSeq = Math.max(this.lastSeq, ev.seq);
      if (ev.type === "hello" && ev.finals < this.finals.size) this.reset(); // a new lecture under the same name
      if (ev.type === "hello") this.translating = ev.translate || null;
      else if (ev.type === "final") this.addFinal(ev);
      else if (ev.type === "translation") this.addTranslation(ev);
      else if (ev.type === "partial") this.setPartial(ev.committed, ev.unstable);
      else if (ev.type === "notes") this.showNotes(ev);
      else if (ev.type === "panel") this.showPanel(ev);
      else if (ev.type === "status") {
        const live = ev.state === "live";
        this.$.live.classList.toggle("on", live);
        this.state(live ? `live · ${ev.listeners} watching` : ev.state === "stopped" ? "lecture paused" : ev.state);
      } else if (ev.type === "error" && ["too_many_languages", "translation_unavailable"].includes(ev.code)) {
        this.$.lang.textContent = `${this.getAttribute("translate")}: not translated`; // lasts, unlike the state
        this.$.lang.title = ev.message;
      } else if (ev.type === "error") this.state(ev.message);
      this.dispatchEvent(new CustomEvent("realtime-event", { detail: ev, bubbles: true, composed: true }));
      if (this.follow) this.$.scroll.scrollTop = this.$.scroll.scrollHeight;
    }

    addFinal(ev) {
      if (this.finals.has(ev.id)) return;
      this.finals.set(ev.id, ev);
      const p = el("p", "final");
      p.append(el("time", "", clock(ev.start)), el("span", "orig", ev.text));
      if (this.translating && ev.language !== this.translating) {
        p.append(el("span", "tr"));
        p.classList.add("pending"); // the original stands until its translation comes: never a gap
      }
      const empty = this.$.finals.querySelector(".empty");
      if (empty) empty.remove();
      // Finals arrive in id order (append); one replayed after a reconnect may land before later ones.
      const last = this.$.finals.lastElementChild;
      const next = last && Number(last.dataset.id) > ev.id
        ? [...this.$.finals.children].find((c) => Number(c.dataset.id) > ev.id) : null;
      p.dataset.id = ev.id;
      this.$.finals.insertBefore(p, next || null);
      if (this.translations.has(ev.id)) this.showTranslation(p, this.translations.get(ev.id));
      this.setPartial("", "");
    }

    addTranslation(ev) {
      if (ev.lang !== this.translating) return;
      this.translations.set(ev.final, ev);
      const p = this.$.finals.querySelector(`.final[data-id="${ev.final}"]`);
      if (p) this.showTranslation(p, ev);
    }

    showTranslation(p, ev) {
      let tr = p.querySelector(".tr");
      if (!tr) { tr = el("span", "tr"); p.append(tr); }
      p.classList.remove("pending");
      p.classList.toggle("translated", ev.state === "done");
      p.classList.toggle("untranslated", ev.state !== "done");
      tr.textContent = ev.state === "done" ? ev.text : "";
      tr.title = ev.state === "done" ? "" : `not translated (${ev.reason.replace("_", " ")})`;
    }

    setPartial(committed, unstable) {
      if (this.$.committed.textContent !== committed) this.$.committed.textContent = committed;
      if (this.$.unstable.textContent !== unstable) this.$.unstable.textContent = unstable;
    }

    showNotes(ev) {
      this.$.notes.dataset.version = ev.version;
      this.$.source.textContent = ev.source === "extractive" ? "(key sentences, no LLM)" : "";
      this.$.bullets.replaceChildren(...ev.bullets.filter((b) => !b.parent).map((b) => {
        const li = el("li");
        inline(li, b.text);
        const subs = ev.bullets.filter((c) => c.parent === b.id);
        if (subs.length) {
          const ul = el("ul");
          for (const c of subs) { const sub = el("li"); inline(sub, c.text); ul.append(sub); }
          li.append(ul);
        }
        return li;
      }));
      this.showNotesPane();
    }

    showPanel(ev) {
      const sec = this.sections[ev.panel];
      if (!sec) return;
      sec.dataset.version = ev.version;
      sec.querySelector("ul").replaceChildren(...ev.items.map((item) => {
        const li = el("li"), link = el("button", "t", short(item.start));
        link.dataset.final = item.refs[0];
        link.title = "Show in the captions";
        li.append(link);
        if (ev.panel === "outline") li.append(document.createTextNode(item.title));
        else if (ev.panel === "terms") li.append(el("strong", "", item.term), ` — ${item.text}`);
        else {
          li.append(el("span", "kind", item.kind), document.createTextNode(item.text));
          if (item.due) li.append(document.createTextNode(" "), el("span", "due", `(${item.due})`));
        }
        return li;
      }));
      this.showNotesPane();
    }

    /** A recap of the lecture so far, streamed into the catch-up section as the server writes it. */
    async catchUp() {
      const room = this.getAttribute("room"), key = this.getAttribute("key");
      const base = new URL(this.getAttribute("server") || scriptOrigin || location.origin, location.href);
      const out = this.$.recap;
      this.$.askRecap.disabled = true;
      out.replaceChildren(el("p", "meta", "catching up…"));
      let meta = null, text = "";
      const show = (markdown) => {
        const span = meta ? `${short(meta.covered.from)}–${short(meta.covered.to)}` : "";
        const started = meta && meta.started_at ? `, lecture began ${new Date(meta.started_at * 1000)
          .toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })}` : "";
        const nodes = [el("p", "meta", meta ? `covering ${span}${started}` : "")];
        let ul = null;
        for (const line of markdown.split("\n")) {
          if (!line.trim()) { ul = null; continue; }
          if (line.startsWith("- ")) {
            if (!ul) { ul = el("ul"); nodes.push(ul); }
            const li = el("li"); inline(li, line.slice(2)); ul.append(li);
          } else { ul = null; const p = el("p"); inline(p, line); nodes.push(p); }
        }
        out.replaceChildren(...nodes);
      };
      try {
        const headers = { accept: "text/event-stream", ...(key ? { authorization: `Bearer ${key}` } : {}) };
        const url = new URL(`/v1/rooms/${encodeURIComponent(room)}/catchup`, base);
        const r = await fetch(url, { method: "POST", headers });
        if (!r.ok) { out.replaceChildren(el("p", "meta", (await r.json()).message)); return; }
        const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let cut;
          while ((cut = buffer.indexOf("\n\n")) >= 0) {
            const block = buffer.slice(0, cut); buffer = buffer.slice(cut + 2);
            const kind = (block.match(/^event: (.*)$/m) || [])[1];
            const data = JSON.parse((block.match(/^data: (.*)$/m) || [])[1] || "{}");
            if (kind === "meta") meta = data;
            else if (kind === "delta") { text += data.text; show(text); }
            else if (kind === "done") { show(data.markdown); out.dataset.source = data.source; }
          }
        }
      } catch (err) {
        out.replaceChildren(el("p", "meta", "The server could not be reached."));
      } finally { this.$.askRecap.disabled = false; }
    }

    jumpToLive() {
      this.follow = true;
      this.$.jump.hidden = true;
      this.$.scroll.scrollTop = this.$.scroll.scrollHeight;
    }

    transcript() {
      return [...this.finals.values()].sort((a, b) => a.id - b.id).map((f) => {
        const t = this.translations.get(f.id);
        return `[${clock(f.start)}] ${f.text}` + (t && t.state === "done" ? `\n    ${t.text}` : "");
      }).join("\n");
    }
  }

  customElements.define("realtime-captions", RealtimeCaptions);

  // One-tag embedding: <script src=".../widget.js" data-room="…"> puts the element where the script stands.
  const script = document.currentScript;
  if (script && script.dataset.room) {
    const node = document.createElement("realtime-captions");
    for (const [k, v] of Object.entries(script.dataset)) node.setAttribute(k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`), v);
    script.after(node);
  }
})();
