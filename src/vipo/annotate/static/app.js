// vipo annotate: the labelling page. No framework, no build step, nothing loaded from outside.
// Everything that comes from data (prompts, reasons, tags, names) reaches the page through textContent only.
"use strict";

const QUESTIONS = {
  pairwise: {
    semantic: ["Semantic consistency", "Which video shows better what the prompt asks for?"],
    fidelity: ["Fidelity", "Which video is sharper and cleaner, with fewer artifacts?"],
    motion: ["Motion", "Which video moves more smoothly and plausibly?"],
  },
  pointwise: {
    semantic: ["Semantic consistency", "Does it show what the prompt asks for?"],
    fidelity: ["Fidelity", "Is it sharp and clean, free of artifacts?"],
    motion: ["Motion", "Is the motion smooth and plausible?"],
  },
};
const ROW_KEYS = [["1", "2", "3"], ["4", "5", "6"], ["7", "8", "9"]];
const TAG_KEYS = [["q", "w", "e", "r", "t", "y"], ["a", "s", "d", "f", "g", "h"]];

const $ = (id) => document.getElementById(id);
let me = null;          // {name, admin, dimensions, tags, ...}
let item = null;        // the item on screen
let state = null;       // {choice: {dim: value}, tags: {A: Set, B: Set}}
let history = [];       // ids of answered items, oldest first
let hpos = null;        // index into history while revisiting answers; null on a new item
let videos = [];        // <video> elements on screen, left first

function el(tag, props, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

async function api(path, body) {
  const opt = { credentials: "same-origin" };
  if (body !== undefined) {
    opt.method = "POST";
    opt.headers = { "Content-Type": "application/json" };
    opt.body = JSON.stringify(body);
  }
  const r = await fetch(path, opt);
  if (r.status === 401) { location.reload(); throw new Error("logged out"); }
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(typeof data.detail === "string" ? data.detail : r.statusText);
  return data;
}

function say(text, ok) {
  $("message").textContent = text;
  $("message").className = ok ? "ok" : "";
}

function showProgress(p) {
  $("progress").textContent = `${p.done} / ${p.assigned} done` + (p.skipped ? ` (${p.skipped} skipped)` : "");
}

// ---- playback: one play/pause and one scrubber for every video on screen --------------------------------------
function duration() {
  const ds = videos.map((v) => v.duration).filter((d) => isFinite(d) && d > 0);
  return ds.length ? Math.min(...ds) : 0;
}

function seek(t) {
  const d = duration();
  t = Math.max(0, Math.min(t, d));
  for (const v of videos) v.currentTime = t;
  showTime();
}

function showTime() {
  const m = videos[0];
  const d = duration();
  if (!m) return;
  $("scrub").value = d ? Math.round((1000 * m.currentTime) / d) : 0;
  $("time").textContent = `${m.currentTime.toFixed(1)} / ${d.toFixed(1)} s`;
}

function playing() { return videos.length && !videos[0].paused; }

function togglePlay() {
  if (!videos.length) return;
  if (playing()) {
    for (const v of videos) v.pause();
    for (const v of videos.slice(1)) v.currentTime = videos[0].currentTime;   // paused on the same frame
  } else {
    const m = videos[0];
    if (m.currentTime >= duration() - 0.05) seek(0);
    for (const v of videos) { v.currentTime = m.currentTime; v.play().catch(() => {}); }
  }
  $("play").firstChild.textContent = playing() ? "\u23F8 Pause " : "\u25B6 Play ";
}

function wirePlayer() {
  const m = videos[0];
  m.addEventListener("timeupdate", () => {
    for (const v of videos.slice(1)) {
      if (Math.abs(v.currentTime - m.currentTime) > 0.1) v.currentTime = m.currentTime;   // keep in step
    }
    if (m.currentTime >= duration() && playing()) togglePlay();
    showTime();
  });
  m.addEventListener("ended", () => { for (const v of videos) v.pause(); showTime(); togglePlayLabel(); });
  for (const v of videos) v.addEventListener("loadedmetadata", showTime);
}

function togglePlayLabel() { $("play").firstChild.textContent = playing() ? "\u23F8 Pause " : "\u25B6 Play "; }

// ---- rendering ---------------------------------------------------------------------------------------------
function choose(dim, value) {
  state.choice[dim] = value;
  for (const b of document.querySelectorAll(`[data-dim="${dim}"] .choices button`)) {
    b.setAttribute("aria-pressed", String(b.dataset.value === value));
  }
}

function toggleTag(title, tag) {
  const set = state.tags[title];
  if (set.has(tag)) set.delete(tag); else set.add(tag);
  const b = document.querySelector(`[data-title="${title}"] [data-tag="${CSS.escape(tag)}"]`);
  if (b) b.setAttribute("aria-pressed", String(set.has(tag)));
}

function render(data) {
  item = data;
  state = { choice: {}, tags: { A: new Set(), B: new Set() } };
  for (const v of videos) { v.pause(); v.removeAttribute("src"); v.load(); }
  $("done").hidden = true;
  $("task").hidden = false;
  $("kind").textContent = item.task === "pairwise"
    ? "Pairwise: two videos of one prompt; which is better? (A and B keep their names wherever they are shown)"
    : "Single video: how good is it?";
  $("prompt").textContent = item.prompt;

  const box = $("videos");
  box.replaceChildren();
  videos = [];
  item.videos.forEach((v, i) => {
    const video = el("video", { muted: "", playsinline: "", preload: "auto" });
    video.muted = true;
    video.src = v.url;
    videos.push(video);
    const tagRow = el("div", { class: "tags" });
    me.tags.forEach((t, j) => {
      const key = TAG_KEYS[i][j];
      tagRow.append(el("button", { type: "button", "data-tag": t, "aria-pressed": "false", tabindex: "-1",
        onclick: () => toggleTag(v.title, t) }, t + " ", el("kbd", { text: key })));
    });
    const caption = item.task === "pairwise" ? `Video ${v.title}` : "Video";
    box.append(el("figure", { "data-title": v.title, "data-side": i ? "right" : "left" },
      el("figcaption", { text: caption }), video, tagRow));
  });
  wirePlayer();
  togglePlayLabel();
  showTime();

  const dims = $("dims");
  dims.replaceChildren();
  me.dimensions.forEach((d, r) => {
    const values = item.task === "pairwise" ? [item.videos[0].title, "Tie", item.videos[1].title] : item.choices;
    const buttons = el("div", { class: "choices" });
    values.forEach((value, c) => {
      const label = item.task === "pairwise" && value !== "Tie" ? `${value} better` : value;
      buttons.append(el("button", { type: "button", "data-value": value, "aria-pressed": "false", tabindex: "-1",
        onclick: () => choose(d, value) }, label + " ", el("kbd", { text: ROW_KEYS[r][c] })));
    });
    const [name, question] = QUESTIONS[item.task][d];
    const reason = el("textarea", { "data-reason": d, maxlength: "2000", rows: "2",
      placeholder: "Why? (required)", "aria-label": `reason for ${name}` });
    dims.append(el("div", { class: "dim", "data-dim": d },
      el("div", { class: "q" }, el("strong", { text: name }), question), buttons, reason));
  });

  if (item.answer) {
    for (const [d, v] of Object.entries(item.answer.verdicts)) choose(d, v);
    for (const [d, text] of Object.entries(item.answer.reasons)) {
      const t = document.querySelector(`[data-reason="${d}"]`);
      if (t) t.value = text;
    }
    for (const [title, list] of Object.entries(item.answer.tags || {})) for (const t of list) toggleTag(title, t);
    say("Your earlier answer: change anything and submit again.", true);
  } else {
    say("");
  }
  $("skip").firstChild.textContent = hpos === null ? "Skip " : "Forward \u25B6 ";
  $("skip").disabled = !!item.answer && hpos === null;
  $("back").disabled = hpos === 0 || history.length === 0;
  showProgress(item.progress);
}

function showDone(progress) {
  item = null;
  for (const v of videos) v.pause();
  videos = [];
  $("task").hidden = true;
  $("done").hidden = false;
  $("skip").disabled = true;
  $("skip").firstChild.textContent = "Skip ";
  $("back").disabled = history.length === 0;
  showProgress(progress);
}

// ---- navigation ----------------------------------------------------------------------------------------------
async function loadNext() {
  hpos = null;
  const data = await api("/api/next");
  if (data.done) showDone(data.progress); else render(data);
}

async function loadHistory(pos) {
  hpos = pos;
  render(await api("/api/item?id=" + encodeURIComponent(history[pos])));
}

async function refreshHistory() { history = (await api("/api/history")).items; }

let busy = false;

async function submit() {
  if (!item || busy) return;
  const reasons = {};
  const missing = [];
  for (const d of me.dimensions) {
    reasons[d] = document.querySelector(`[data-reason="${d}"]`).value;
    if (!state.choice[d]) missing.push(`choose ${d}`);
    if (!reasons[d].trim()) missing.push(`a reason for ${d}`);
  }
  if (missing.length) { say("Missing: " + missing.join(", ")); return; }
  const tags = {};
  for (const [title, set] of Object.entries(state.tags)) if (set.size) tags[title] = [...set];
  busy = true;
  try {
    try {
      await api("/api/answer", { item: item.id, verdicts: state.choice, reasons, tags });
    } catch (e) { say("Not saved: " + e.message); return; }
    await refreshHistory();
    if (hpos !== null && hpos + 1 < history.length) await loadHistory(hpos + 1);
    else await loadNext();
  } catch (e) {
    say("Saved, but the next item did not load: " + e.message);
  } finally {
    busy = false;
  }
}

async function back() {
  await refreshHistory();
  if (!history.length) return;
  const pos = hpos === null ? history.length - 1 : Math.max(0, hpos - 1);
  await loadHistory(pos);
}

async function skip() {
  if (!item) return;
  if (hpos !== null) {                       // revisiting: move forward without changing anything
    if (hpos + 1 < history.length) await loadHistory(hpos + 1); else await loadNext();
    return;
  }
  if (item.answer) return;
  try { await api("/api/skip", { item: item.id }); } catch (e) { say(e.message); return; }
  await loadNext();
}

async function toggleAdmin() {
  const section = $("admin");
  section.hidden = !section.hidden;
  if (section.hidden) return;
  const o = await api("/api/admin");
  $("admin-summary").textContent =
    `${o.items} items, each to ${o.k} annotators: ${o.complete} complete, ${o.in_progress} in progress, ` +
    `${o.untouched} untouched.`;
  const rows = $("admin-rows");
  rows.replaceChildren();
  for (const a of o.annotators) {
    const last = a.last_answer ? new Date(a.last_answer * 1000).toLocaleString() : "";
    rows.append(el("tr", {}, ...[a.name + (a.admin ? " (admin)" : ""), a.done, a.open, a.skipped, a.available, last]
      .map((x) => el("td", { text: String(x) }))));
  }
}

// ---- keys ------------------------------------------------------------------------------------------------------
document.addEventListener("keydown", (ev) => {
  const typing = ev.target instanceof HTMLTextAreaElement || ev.target instanceof HTMLInputElement;
  if ((ev.ctrlKey || ev.metaKey) && ev.key === "Enter") { ev.preventDefault(); submit(); return; }
  if (typing) { if (ev.key === "Escape") ev.target.blur(); return; }
  if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
  if (ev.target instanceof HTMLButtonElement) ev.target.blur();   // a focused button must not fire again on keyup
  if (ev.key === ",") { back(); return; }
  if (!item) return;
  if (ev.key === "Enter") { ev.preventDefault(); submit(); return; }
  if (ev.key === " ") { ev.preventDefault(); togglePlay(); return; }
  if (ev.key === "Tab" && !ev.shiftKey) {     // to the first empty reason (then Tab goes on from reason to reason)
    const empty = [...document.querySelectorAll("[data-reason]")].find((t) => !t.value.trim());
    const first = empty || document.querySelector("[data-reason]");
    if (first) { ev.preventDefault(); first.focus(); }
    return;
  }
  if (ev.key === ".") { skip(); return; }
  if (ev.key === "ArrowLeft" || ev.key === "ArrowRight") {
    ev.preventDefault();
    if (videos.length) seek(videos[0].currentTime + (ev.key === "ArrowLeft" ? -0.125 : 0.125));
    return;
  }
  ROW_KEYS.forEach((keys, r) => {
    const c = keys.indexOf(ev.key);
    if (c < 0) return;
    const d = me.dimensions[r];
    const value = item.task === "pairwise" ? [item.videos[0].title, "Tie", item.videos[1].title][c] : item.choices[c];
    choose(d, value);
  });
  TAG_KEYS.forEach((keys, i) => {
    const j = keys.indexOf(ev.key.toLowerCase());
    if (j >= 0 && j < me.tags.length && item.videos[i]) toggleTag(item.videos[i].title, me.tags[j]);
  });
});

// ---- start -----------------------------------------------------------------------------------------------------
async function start() {
  me = await api("/api/me");
  $("who").textContent = me.name;
  showProgress(me.progress);
  $("admin-toggle").hidden = !me.admin;
  $("play").addEventListener("click", togglePlay);
  $("scrub").addEventListener("input", (e) => seek((e.target.value / 1000) * duration()));
  $("submit").addEventListener("click", submit);
  $("back").addEventListener("click", back);
  $("skip").addEventListener("click", skip);
  $("admin-toggle").addEventListener("click", toggleAdmin);
  await refreshHistory();
  await loadNext();
}

start().catch((e) => say(e.message));
