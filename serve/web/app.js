// msearch's search page: one ranked list of moments (scenes, sounds, spoken lines, pages,
// pictures, texts), each shown and playable where it matched. Plain ES module, no build step.
// Every text that comes from the index is put in the page as text (textContent), never as HTML.
import { TEXT, pickLanguage } from "./i18n.js";

const KINDS = ["video", "audio", "page", "image", "text"];
const PAGE_SIZE = 20;
const PLAYABLE = /\.(mp4|m4v|webm|ogv|ogg|oga|opus|mp3|m4a|aac|wav|flac|mov)$/i;
const $ = (id) => document.getElementById(id);

let lang = pickLanguage();
let t = TEXT[lang];
const state = { q: "", kinds: [], path: "", from: "", to: "", sort: "relevance", like: null, at: null, page: null };
let example = null; // {file, kind} when searching by an uploaded picture or sound (not in the URL)
let offset = 0;
let total = 0;
let current = -1; // index of the focused card
let token = localStorage.getItem("msearch.token") || "";

// -- helpers -------------------------------------------------------------------------------
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else if (key === "style") node.style.cssText = value; // through the CSSOM: the page's CSP allows no inline style
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) if (child !== null && child !== undefined) node.append(child);
  return node;
}

export function clock(seconds) {
  const s = Math.max(0, Math.floor(seconds || 0));
  const pad = (n) => String(n).padStart(2, "0");
  return `${pad(Math.floor(s / 3600))}:${pad(Math.floor((s % 3600) / 60))}:${pad(s % 60)}`;
}

function basename(path) { return path.slice(path.lastIndexOf("/") + 1); }
function dirname(path) { return path.slice(0, path.lastIndexOf("/")) || "/"; }

// The query's words and Chinese character pairs, for marking them in snippets.
export function terms(query) {
  const out = new Set();
  for (const word of (query || "").toLowerCase().split(/[\s,.;:!?，。；：！？、"'“”‘’()（）]+/u)) {
    if (!word) continue;
    for (const run of word.match(/[\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff\uac00-\ud7af]+|[^\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff\uac00-\ud7af]+/gu) || []) {
      if (/[\u3400-\u9fff]/u.test(run) && run.length > 1) {
        for (let i = 0; i + 1 < run.length; i++) out.add(run.slice(i, i + 2));
      } else if (run.length > 1 || /[\u3400-\u9fff]/u.test(run)) out.add(run);
    }
  }
  return [...out].sort((a, b) => b.length - a.length);
}

// The snippet as text nodes, the query's terms wrapped in <mark> (built as elements, not HTML).
function highlighted(text, query) {
  const parts = terms(query);
  const p = el("p", { class: "snippet" });
  if (!parts.length) { p.textContent = text; return p; }
  const pattern = new RegExp(parts.map((x) => x.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")).join("|"), "giu");
  let last = 0;
  for (const m of text.matchAll(pattern)) {
    if (m.index > last) p.append(document.createTextNode(text.slice(last, m.index)));
    p.append(el("mark", { text: m[0] }));
    last = m.index + m[0].length;
  }
  if (last < text.length) p.append(document.createTextNode(text.slice(last)));
  return p;
}

async function api(path, options = {}) {
  const response = await fetch(path, options);
  let body = null;
  try { body = await response.json(); } catch { body = null; }
  if (!response.ok) {
    const detail = body && body.detail;
    const message = typeof detail === "string" ? detail
      : Array.isArray(detail) ? detail.map((d) => `${(d.loc || []).filter((x) => x !== "body").join(".")}: ${d.msg}`).join("; ")
      : `HTTP ${response.status}`;
    throw new Error(message);
  }
  return body;
}

// -- the address bar holds the search --------------------------------------------------------
function readURL() {
  const params = new URLSearchParams(location.search);
  state.q = params.get("q") || "";
  state.kinds = params.getAll("kind").filter((k) => KINDS.includes(k));
  state.path = params.get("path") || "";
  state.from = params.get("from") || "";
  state.to = params.get("to") || "";
  state.sort = params.get("sort") === "date" ? "date" : "relevance";
  state.like = params.get("like");
  state.at = params.get("at");
  state.page = params.get("page");
  return params.get("view");
}

function writeURL(push = true) {
  const params = new URLSearchParams();
  if (state.like) {
    params.set("like", state.like);
    if (state.at !== null && state.at !== undefined) params.set("at", state.at);
    if (state.page) params.set("page", state.page);
  } else if (state.q) params.set("q", state.q);
  for (const k of state.kinds) params.append("kind", k);
  if (state.path) params.set("path", state.path);
  if (state.from) params.set("from", state.from);
  if (state.to) params.set("to", state.to);
  if (state.sort !== "relevance") params.set("sort", state.sort);
  const url = `/?${params}`;
  if (url !== location.pathname + location.search) (push ? history.pushState : history.replaceState).call(history, null, "", url);
}

function syncForm() {
  $("q").value = state.q;
  $("path").value = state.path;
  $("from").value = state.from;
  $("to").value = state.to;
  $("sort").value = state.sort;
  for (const chip of $("kinds").querySelectorAll("button")) chip.setAttribute("aria-pressed", String(state.kinds.includes(chip.dataset.kind)));
}

function readForm() {
  state.q = $("q").value.trim();
  state.path = $("path").value.trim();
  state.from = $("from").value;
  state.to = $("to").value;
  state.sort = $("sort").value;
}

// -- searching ---------------------------------------------------------------------------------
function options() {
  const filters = {};
  if (state.path) filters.path_prefix = state.path;
  if (state.from) filters.modified_after = state.from;
  if (state.to) { // the whole "to" day counts
    const next = new Date(`${state.to}T00:00:00Z`);
    next.setUTCDate(next.getUTCDate() + 1);
    filters.modified_before = next.toISOString().slice(0, 10);
  }
  const out = { top_k: PAGE_SIZE, offset, sort: state.sort };
  if (state.kinds.length) out.kinds = state.kinds;
  if (Object.keys(filters).length) out.filters = filters;
  return out;
}

async function request() {
  const opts = options();
  if (example) {
    const form = new FormData();
    form.append("file", example.file, example.file.name || "query");
    for (const [key, value] of Object.entries(opts)) {
      if (key === "kinds") for (const k of value) form.append("kinds", k);
      else if (key === "filters") form.append("filters", JSON.stringify(value));
      else form.append(key, String(value));
    }
    return api(`/api/v1/search/${example.kind}`, { method: "POST", body: form });
  }
  if (state.like) {
    const body = { file_id: state.like, ...opts };
    if (state.at !== null && state.at !== undefined && state.at !== "") body.start_s = Number(state.at);
    if (state.page) body.page = Number(state.page);
    return api("/api/v1/search/similar", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  }
  return api("/api/v1/search", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ query: state.q, ...opts }) });
}

let searches = 0; // the latest search wins: an earlier one's answer arriving later is dropped

async function search(append = false) {
  const mine = ++searches;
  showView("search");
  if (!append) {
    offset = 0;
    current = -1;
    $("results").replaceChildren();
  }
  if (!state.q && !state.like && !example) {
    $("summary").textContent = "";
    $("more-row").hidden = true;
    return;
  }
  $("summary").textContent = "…";
  document.body.classList.add("busy");
  try {
    const page = await request();
    if (mine !== searches) return;
    total = page.total;
    const list = $("results");
    page.results.forEach((r, i) => list.append(card(r, offset + i)));
    offset += page.results.length;
    if (!list.children.length) {
      $("summary").replaceChildren($("empty").content.cloneNode(true));
      localize($("summary"));
    } else {
      $("summary").textContent = `${t.results(1, offset, total, page.total_exact)} · ${t.took(Math.round(page.took_ms))}`;
    }
    $("more-row").hidden = !(offset < total || (!page.total_exact && page.results.length === PAGE_SIZE));
  } catch (e) {
    if (mine !== searches) return;
    $("summary").textContent = t.error(e.message);
    $("more-row").hidden = true;
  } finally {
    if (mine === searches) document.body.classList.remove("busy");
  }
}

// -- result cards ------------------------------------------------------------------------------
function mediaURL(r, moment) {
  const id = encodeURIComponent(r.file_id);
  if (PLAYABLE.test(r.path)) return { src: `/api/v1/files/${id}/content`, offset: 0 };
  // A source a browser cannot decode: a cut of the moment, made by the server.
  const start = Math.max(0, moment.start_s || 0);
  const end = Math.min(start + 110, Math.max(moment.end_s || start + 10, start + 1));
  return { src: `/api/v1/files/${id}/clip?start_s=${start.toFixed(3)}&end_s=${end.toFixed(3)}`, offset: start, clip: true };
}

function card(r, index) {
  const best = (r.moments && r.moments[0]) || r;
  const timed = (r.kind === "video" || r.kind === "audio") && r.start_s !== null && r.start_s !== undefined;
  const where = timed ? `${clock(r.start_s)}–${clock(r.end_s)}` : r.page ? t.page(r.page) : "";
  if (index === 0) $("results").dataset.best = String(r.score || 1);
  const topScore = Number($("results").dataset.best || r.score || 1);
  const thumbSrc = r.kind === "page" && r.page ? `/api/v1/files/${encodeURIComponent(r.file_id)}/pages/${r.page}?side=320` : r.thumbnail;
  const item = el("li", { class: `card kind-${r.kind}`, tabindex: "0", "data-index": index, "data-file": r.file_id,
    "data-start": timed ? r.start_s : null },
    el("div", { class: "thumb" }, thumbSrc ? el("img", { src: thumbSrc, alt: "", loading: "lazy", decoding: "async" })
      : el("span", { class: "glyph", text: r.kind === "audio" ? "♪" : r.kind === "text" ? "¶" : "▣" })),
    el("div", { class: "body" },
      el("div", { class: "title" },
        el("span", { class: "kind", text: t.kinds[r.kind] || r.kind }),
        el("span", { class: "name", text: basename(r.path), title: r.path }),
        el("span", { class: "folder", text: dirname(r.path) })),
      el("div", { class: "meta" },
        r.modified ? el("time", { datetime: r.modified, text: r.modified.slice(0, 10) }) : null,
        where ? el("span", { class: "moment", text: where }) : null,
        r.moments && r.moments.length > 1 ? el("span", { class: "count", text: t.moments(r.moments.length) }) : null,
        el("span", { class: "score", title: String(r.score) },
          el("span", { class: "bar", style: `width:${Math.max(4, Math.min(100, (100 * r.score) / topScore)).toFixed(0)}%` }))),
      r.text ? highlighted(r.text, state.q) : null,
      el("div", { class: "actions" },
        timed ? el("button", { type: "button", class: "play", text: t.play, onclick: () => openCard(item, r, true) }) : null,
        r.kind === "page" && r.page ? el("a", { class: "open", href: `/api/v1/files/${encodeURIComponent(r.file_id)}/content#page=${r.page}`, target: "_blank", rel: "noopener", text: t.openPage }) : null,
        !timed && r.kind !== "page" ? el("a", { class: "open", href: `/api/v1/files/${encodeURIComponent(r.file_id)}/content`, target: "_blank", rel: "noopener", text: t.open }) : null,
        el("button", { type: "button", class: "like", text: t.like, onclick: () => likeThis(r, best) }),
        el("button", { type: "button", class: "copy", text: t.copy, onclick: (e) => copyPath(r.path, e.currentTarget) })),
      el("div", { class: "detail", hidden: true })));
  item.addEventListener("focus", () => { current = index; });
  item._result = r;
  return item;
}

function likeThis(r, moment) {
  example = null;
  $("example").hidden = true;
  state.like = r.file_id;
  state.at = (r.kind === "video" || r.kind === "audio") && moment.start_s !== null && moment.start_s !== undefined ? String(moment.start_s) : null;
  state.page = r.kind === "page" && moment.page ? String(moment.page) : null;
  state.q = "";
  syncForm();
  writeURL();
  showLike(r.path);
  search();
}

function showLike(path) {
  const box = $("example");
  box.replaceChildren(el("span", { text: t.likeOf(basename(path || state.like)) }),
    el("button", { type: "button", text: t.clear, onclick: clearExample }));
  box.hidden = false;
}

function clearExample() {
  example = null;
  state.like = state.at = state.page = null;
  $("example").hidden = true;
  writeURL();
  search();
}

async function copyPath(path, button) {
  try {
    await navigator.clipboard.writeText(path);
  } catch {
    const area = el("textarea", {});
    area.value = path;
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  button.textContent = t.copied;
  setTimeout(() => { button.textContent = t.copy; }, 1200);
}

// Open a card: a player for a video or recording (starting at its moment, stopping at its end,
// other matching moments marked on a timeline), the page image for a document page.
function openCard(item, r, play = false) {
  const detail = item.querySelector(".detail");
  if (!detail.hidden && detail.childElementCount) {
    if (play) togglePlay(item);
    return;
  }
  closeOthers(item);
  detail.replaceChildren();
  if (r.kind === "video" || r.kind === "audio") detail.append(player(r, play));
  else if (r.kind === "page" && r.page) {
    detail.append(el("img", { class: "page", alt: "", src: `/api/v1/files/${encodeURIComponent(r.file_id)}/pages/${r.page}?side=1024` }));
  } else if (r.kind === "image") {
    detail.append(el("img", { class: "picture", alt: "", src: `/api/v1/files/${encodeURIComponent(r.file_id)}/content` }));
  } else return;
  detail.hidden = false;
  item.classList.add("open");
}

function closeCard(item) {
  const detail = item.querySelector(".detail");
  for (const media of detail.querySelectorAll("video,audio")) { media.pause(); media.removeAttribute("src"); media.load(); }
  detail.replaceChildren();
  detail.hidden = true;
  item.classList.remove("open");
}

function closeOthers(keep) {
  for (const other of document.querySelectorAll(".card.open")) if (other !== keep) closeCard(other);
}

function togglePlay(item) {
  const media = item.querySelector(".detail video, .detail audio");
  if (!media) return;
  if (media.paused) media.play().catch(() => {}); else media.pause();
}

function player(r, autoplay) {
  let moment = r.moments && r.moments[0] ? r.moments[0] : r;
  let source = mediaURL(r, moment);
  const media = el(r.kind === "video" ? "video" : "audio", { controls: true, preload: "metadata", playsinline: true, class: "media" });
  const wrap = el("div", { class: "player" }, media);
  let stopAt = null;
  const load = (m, startPlaying) => {
    moment = m;
    const next = mediaURL(r, m);
    const start = Math.max(0, (m.start_s || 0) - next.offset);
    stopAt = m.end_s !== null && m.end_s !== undefined ? m.end_s - next.offset : null;
    if (next.src !== source.src || !media.getAttribute("src")) {
      source = next;
      // Media fragment: the browser starts at the moment and stops at its end.
      media.src = `${source.src}#t=${start.toFixed(2)}${stopAt ? `,${stopAt.toFixed(2)}` : ""}`;
    } else media.currentTime = start;
    if (startPlaying) media.play().catch(() => {});
  };
  media.addEventListener("timeupdate", () => {
    if (stopAt !== null && media.currentTime >= stopAt && !media.paused) media.pause();
  });
  media.addEventListener("error", () => {
    if (!source.clip) { // the browser cannot decode the original after all: ask for a cut
      const id = encodeURIComponent(r.file_id);
      const start = Math.max(0, moment.start_s || 0);
      const end = Math.min(start + 110, Math.max(moment.end_s || start + 10, start + 1));
      source = { src: `/api/v1/files/${id}/clip?start_s=${start.toFixed(3)}&end_s=${end.toFixed(3)}`, offset: start, clip: true };
      stopAt = null;
      media.src = source.src;
    }
  });
  const nudge = (delta) => { media.currentTime = Math.max(0, media.currentTime + delta); stopAt = null; };
  const controls = el("div", { class: "controls" },
    el("button", { type: "button", class: "from-here", text: t.fromHere, onclick: () => { stopAt = null; media.play().catch(() => {}); } }),
    el("button", { type: "button", class: "back", text: t.back, onclick: () => nudge(-5) }),
    el("button", { type: "button", class: "fwd", text: t.fwd, onclick: () => nudge(5) }));
  wrap.append(controls);
  const duration = r.duration_s;
  if (duration && r.moments && r.moments.length) {
    const line = el("div", { class: "timeline", role: "list" });
    r.moments.forEach((m, i) => {
      if (m.start_s === null || m.start_s === undefined) return;
      const left = (100 * m.start_s) / duration;
      const width = Math.max(0.8, (100 * ((m.end_s || m.start_s) - m.start_s)) / duration);
      line.append(el("button", {
        type: "button", role: "listitem", class: i === 0 ? "mark best" : "mark",
        style: `left:${left.toFixed(2)}%;width:${width.toFixed(2)}%`, title: `${clock(m.start_s)}–${clock(m.end_s)}`,
        "aria-label": `${clock(m.start_s)}–${clock(m.end_s)}`, onclick: () => load(m, true),
      }));
    });
    wrap.append(line);
  }
  load(moment, autoplay);
  return wrap;
}

// Only one player plays at a time.
document.addEventListener("play", (e) => {
  for (const media of document.querySelectorAll("video,audio")) if (media !== e.target) media.pause();
}, true);

// -- searching by a picture or a sound -------------------------------------------------------
function useFile(file) {
  if (!file) return;
  const kind = file.type.startsWith("image/") ? "image" : "audio";
  example = { file, kind };
  state.like = state.at = state.page = null;
  state.q = "";
  syncForm();
  writeURL();
  const box = $("example");
  const preview = kind === "image" ? el("img", { src: URL.createObjectURL(file), alt: "" }) : el("span", { class: "glyph", text: "♪" });
  box.replaceChildren(preview, el("span", { text: t.exampleOf(file.name || kind) }),
    el("button", { type: "button", text: t.clear, onclick: clearExample }));
  box.hidden = false;
  search();
}

// -- status and control ------------------------------------------------------------------------
function table(head, rows) {
  return el("table", {}, el("thead", {}, el("tr", {}, head.map((h) => el("th", { text: h })))),
    el("tbody", {}, rows.map((row) => el("tr", {}, row.map((c) => el("td", { text: c === null || c === undefined ? "" : String(c) }))))));
}

async function showStatus() {
  showView("status");
  const box = $("status");
  box.replaceChildren(el("p", { text: "…" }));
  let info;
  try { info = await api("/api/v1/status"); } catch (e) { box.replaceChildren(el("p", { text: t.error(e.message) })); return; }
  const kinds = Object.entries(info.kinds || {}).map(([kind, counts]) =>
    [t.kinds[kind] || kind, Object.entries(counts).map(([s, n]) => `${n} ${t.statusNames[s] || s}`).join(", ")]);
  const spaces = Object.entries(info.points || {}).map(([space, n]) => [space, n, (info.models || {})[space] || ""]);
  const missing = Object.entries(info.missing_models || {});
  const failed = (info.failed || []).map((f) => [f.path, f.error]);
  const partly = (info.warnings || []).map((f) => [f.path, f.warning]);
  const runs = (info.runs || []).map((r) => [r.run_id.slice(0, 8), r.indexed, r.unchanged, r.failed, r.skipped, r.in_flight]);
  const queue = Object.entries(info.queue || {});
  box.replaceChildren(...[
    el("h2", { text: t.statusTitle }),
    el("p", { class: "data-dir", text: info.data_dir }),
    el("h3", { text: t.files }), table([t.kind, t.files], kinds),
    el("h3", { text: t.points }), table([t.space, t.points, t.model], spaces),
    el("h3", { text: t.loaded }), el("p", { class: "loaded", text: (info.query_models || []).join(", ") || t.none }),
    el("h3", { text: t.missing }),
    missing.length ? el("ul", { class: "missing" }, missing.map(([role, message]) => el("li", {}, el("b", { text: role }), " ", message))) : el("p", { text: t.none }),
    el("h3", { text: t.runs }),
    runs.length ? table(["run", "indexed", "unchanged", "failed", "skipped", "in flight"], runs) : el("p", { text: t.noRuns }),
    queue.length ? el("ul", { class: "queue" }, queue.map(([path, s]) => el("li", { text: `${s}: ${path}` }))) : null,
    el("h3", { text: t.failed }),
    failed.length ? table([t.files, t.reason], failed) : el("p", { text: t.none }),
    el("h3", { text: t.partly }),
    partly.length ? table([t.files, t.lost], partly) : el("p", { text: t.none }),
    control()].filter(Boolean));
}

function control() {
  const message = el("p", { class: "message", "aria-live": "polite" });
  const tokenInput = el("input", { type: "password", id: "token", value: token, autocomplete: "off", "aria-label": t.token });
  const folder = el("input", { type: "text", id: "index-path", spellcheck: "false", placeholder: "/media/new" });
  const what = el("select", { id: "reset-type" }, Object.entries(t.resetWhat).map(([k, v]) => el("option", { value: k, text: v })));
  const authorized = (init) => ({ ...init, headers: { ...(init.headers || {}), authorization: `Bearer ${token}`, "content-type": "application/json" } });
  return el("section", { class: "control" },
    el("h3", { text: t.control }),
    el("div", { class: "row" }, el("label", {}, el("span", { text: t.token }), tokenInput),
      el("button", { type: "button", text: t.save, onclick: () => { token = tokenInput.value.trim(); localStorage.setItem("msearch.token", token); message.textContent = t.done; } }),
      el("button", { type: "button", text: t.forget, onclick: () => { token = ""; tokenInput.value = ""; localStorage.removeItem("msearch.token"); message.textContent = t.done; } })),
    el("p", { class: "help", text: t.tokenHelp }),
    el("div", { class: "row" }, el("label", {}, el("span", { text: t.indexFolder }), folder),
    el("button", { type: "button", id: "index-button", text: t.index, onclick: async () => {
      message.textContent = "";  // no earlier outcome stands for this one
      try {
        const r = await api("/api/v1/files/process", authorized({ method: "POST", body: JSON.stringify({ path: folder.value.trim() }) }));
        message.textContent = t.queued(r.path);
      } catch (e) { message.textContent = t.error(e.message); }
    } })),
    el("div", { class: "row" }, el("label", {}, el("span", { text: t.reset }), what),
    el("button", { type: "button", id: "reset-button", text: t.reset, onclick: async () => {
      if (!confirm(t.confirmReset)) return;
      message.textContent = "";
      try {
        await api("/api/v1/system/reset", authorized({ method: "POST", body: JSON.stringify({ reset_type: what.value }) }));
        message.textContent = t.done;
      } catch (e) { message.textContent = t.error(e.message); }
    } })),
    message);
}

function showView(view) {
  const status = view === "status";
  $("status").hidden = !status;
  for (const id of ["results", "summary", "filters"]) $(id).hidden = status;
  if (status) { $("more-row").hidden = true; $("example").hidden = true; }
}

// -- language ----------------------------------------------------------------------------------
function localize(root = document) {
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  for (const node of root.querySelectorAll("[data-i18n]")) node.textContent = t[node.dataset.i18n];
  for (const node of root.querySelectorAll("[data-i18n-placeholder]")) node.placeholder = t[node.dataset.i18nPlaceholder];
  for (const node of root.querySelectorAll("[data-i18n-title]")) node.title = t[node.dataset.i18nTitle];
  $("lang").textContent = t.language;
  for (const chip of $("kinds").querySelectorAll("button")) chip.textContent = t.kinds[chip.dataset.kind];
}

function setLanguage(next) {
  lang = next;
  t = TEXT[lang];
  localStorage.setItem("msearch.lang", lang);
  localize();
  route(false);
}

// -- keyboard: / focuses the box, arrows move, Enter opens, Space plays, Esc closes ------------
function cards() { return [...document.querySelectorAll("#results > .card")]; }

function focusCard(i) {
  const list = cards();
  if (!list.length) return;
  current = Math.max(0, Math.min(list.length - 1, i));
  list[current].focus({ preventScroll: false });
  list[current].scrollIntoView({ block: "nearest" });
}

document.addEventListener("keydown", (e) => {
  const typing = ["INPUT", "SELECT", "TEXTAREA"].includes(document.activeElement?.tagName);
  if (e.key === "/" && !typing) { e.preventDefault(); $("q").focus(); $("q").select(); return; }
  if (typing) {
    if (e.key === "Escape") document.activeElement.blur();
    if (e.key === "ArrowDown" && document.activeElement === $("q")) { e.preventDefault(); focusCard(0); }
    return;
  }
  const item = document.activeElement?.closest?.(".card");
  if (e.key === "ArrowDown" || e.key === "j") { e.preventDefault(); focusCard(item ? current + 1 : 0); }
  else if (e.key === "ArrowUp" || e.key === "k") { e.preventDefault(); if (current <= 0) $("q").focus(); else focusCard(current - 1); }
  else if (e.key === "Enter" && item && e.target === item) { e.preventDefault(); openCard(item, item._result); }
  else if (e.key === " " && item && e.target === item) {
    e.preventDefault();
    const detail = item.querySelector(".detail");
    if (detail.hidden && ["video", "audio"].includes(item._result.kind)) openCard(item, item._result, true);
    else togglePlay(item);
  } else if (e.key === "Escape" && item) {
    const y = window.scrollY;
    closeCard(item);
    item.focus({ preventScroll: true });
    window.scrollTo(0, y);
  }
});

// -- wiring --------------------------------------------------------------------------------------
function route(push) {
  const view = readURL();
  syncForm();
  if (view === "status") { showStatus(); return; }
  if (state.like) showLike(null); else if (!example) $("example").hidden = true;
  search();
}

function start() {
  $("kinds").replaceChildren(...KINDS.map((kind) => el("button", {
    type: "button", class: "chip", "data-kind": kind, "aria-pressed": "false",
    onclick: () => {
      state.kinds = state.kinds.includes(kind) ? state.kinds.filter((k) => k !== kind) : [...state.kinds, kind];
      syncForm();
      writeURL();
      search();
    },
  })));
  localize();
  $("search").addEventListener("submit", (e) => {
    e.preventDefault();
    readForm();
    if (state.q) { example = null; state.like = state.at = state.page = null; $("example").hidden = true; }
    writeURL();
    search();
  });
  for (const id of ["path", "from", "to", "sort"]) {
    $(id).addEventListener("change", () => { readForm(); writeURL(); search(); });
  }
  $("more").addEventListener("click", () => search(true));
  $("lang").addEventListener("click", () => setLanguage(lang === "zh" ? "en" : "zh"));
  $("status-link").addEventListener("click", (e) => { e.preventDefault(); history.pushState(null, "", "/?view=status"); showStatus(); });
  $("file").addEventListener("change", (e) => useFile(e.target.files[0]));
  let depth = 0;
  document.addEventListener("dragenter", (e) => { if (e.dataTransfer?.types?.includes("Files")) { depth++; $("drop").hidden = false; } });
  document.addEventListener("dragleave", () => { depth = Math.max(0, depth - 1); if (!depth) $("drop").hidden = true; });
  document.addEventListener("dragover", (e) => e.preventDefault());
  document.addEventListener("drop", (e) => {
    e.preventDefault();
    depth = 0;
    $("drop").hidden = true;
    useFile(e.dataTransfer?.files?.[0]);
  });
  document.addEventListener("paste", (e) => {
    if (["INPUT", "TEXTAREA"].includes(document.activeElement?.tagName) && !e.clipboardData?.files?.length) return;
    const file = e.clipboardData?.files?.[0];
    if (file) { e.preventDefault(); useFile(file); }
  });
  window.addEventListener("popstate", () => { example = null; route(false); });
  route(false);
}

start();
