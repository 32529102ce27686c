// The second-screen viewer: the <realtime-captions> widget full size, plus display controls and questions.
const $ = (id) => document.getElementById(id);
const captions = $("captions");
const prefs = JSON.parse(localStorage.getItem("realtime.viewer") || "{}");
const SIZES = [1, 1.2, 1.35, 1.6, 2, 2.5, 3, 3.6];
let size = SIZES.includes(prefs.size) ? prefs.size : 1.6;

function save() {
  localStorage.setItem("realtime.viewer", JSON.stringify({ size, theme: prefs.theme, only: prefs.only }));
}
function applyPrefs() {
  captions.setAttribute("font-size", `${size}rem`);
  if (prefs.theme) {
    document.documentElement.dataset.theme = prefs.theme;
    captions.setAttribute("theme", prefs.theme);
  }
}

function watch(room) {
  if (!room) return;
  $("room").value = room;
  // A private room's viewer link carries its key in the fragment, which browsers never send to servers.
  const key = new URLSearchParams(location.hash.slice(1)).get("key");
  if (key) captions.setAttribute("key", key);
  captions.setAttribute("room", room);
  $("ask").hidden = false;
  document.title = `${room} — realtime live captions`;
  showUrl();
}

// The caption language: ?translate=zh in the page's address (a link can carry it), else none. A code the menu
// does not list (?translate=sv) gets an entry of its own, so the menu never claims the lecture's language.
function translate(lang) {
  const menu = $("translate");
  if (lang && ![...menu.options].some((o) => o.value === lang)) menu.add(new Option(lang, lang));
  menu.value = lang;
  if (lang) captions.setAttribute("translate", lang); else captions.removeAttribute("translate");
  captions.setAttribute("translation", prefs.only ? "only" : "both");
  $("only-label").hidden = !lang;
  $("only").checked = Boolean(prefs.only);
  showUrl();
}

function showUrl() {
  const room = captions.getAttribute("room"), lang = captions.getAttribute("translate");
  if (!room) return;
  const query = `?room=${encodeURIComponent(room)}` + (lang ? `&translate=${encodeURIComponent(lang)}` : "");
  history.replaceState(null, "", query + location.hash);
}

$("translate").onchange = () => translate($("translate").value);
$("only").onchange = () => { prefs.only = $("only").checked; save(); translate($("translate").value); };
$("join").onsubmit = (e) => { e.preventDefault(); watch($("room").value.trim()); };
$("smaller").onclick = () => { size = SIZES[Math.max(0, SIZES.indexOf(size) - 1)]; applyPrefs(); save(); };
$("larger").onclick = () => { size = SIZES[Math.min(SIZES.length - 1, SIZES.indexOf(size) + 1)]; applyPrefs(); save(); };
$("theme").onclick = () => {
  const dark = (prefs.theme || (matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light")) === "dark";
  prefs.theme = dark ? "light" : "dark";
  applyPrefs(); save();
};
$("fullscreen").onclick = () => {
  if (document.fullscreenElement) document.exitFullscreen();
  else document.documentElement.requestFullscreen().catch(() => {});
};
$("download").onclick = () => {
  const room = captions.getAttribute("room") || "captions";
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([captions.transcript() + "\n"], { type: "text/plain" }));
  a.download = `${room}-transcript.txt`;
  a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
};

$("ask").onsubmit = async (e) => {
  e.preventDefault();
  const question = $("question").value.trim();
  if (!question) return;
  $("answer").textContent = "…";
  try {
    const room = captions.getAttribute("room"), key = captions.getAttribute("key");
    const r = await fetch(`/v1/rooms/${encodeURIComponent(room)}/ask`, {
      method: "POST", body: JSON.stringify({ question }),
      headers: { "content-type": "application/json", ...(key ? { authorization: `Bearer ${key}` } : {}) },
    });
    const body = await r.json();
    $("answer").textContent = r.ok ? body.answer : body.message;
  } catch (err) {
    $("answer").textContent = "The server could not be reached.";
  }
};

applyPrefs();
translate(new URLSearchParams(location.search).get("translate") || "");
watch(new URLSearchParams(location.search).get("room"));
