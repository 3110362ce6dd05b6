// KnowledgeNest live dashboard: no libraries, no assets from the internet.
// Starts from GET /api/analytics/summary, then follows the live feed: over WebSocket
// (/api/events/ws) when it can, else over server-sent events (/api/events/stream), which is
// also where it stays if a WebSocket cannot be opened at all (a proxy that does not pass it).
"use strict";

const MINUTES = 15;        // minutes the chart shows
const MAX_ROWS = 50;       // events kept in the table
const counts = {};         // event type -> count
const perMinute = new Map(); // minute (ms since epoch) -> count, all types

function minuteOf(date) { return Math.floor(date.getTime() / 60000) * 60000; }

function renderCounters() {
  const list = document.getElementById("counters");
  list.replaceChildren(...Object.keys(counts).sort().map((type) => {
    const item = document.createElement("li");
    item.dataset.type = type;
    const name = document.createElement("span");
    name.textContent = type;
    const value = document.createElement("b");
    value.textContent = counts[type];
    item.append(name, value);
    return item;
  }));
}

function renderChart() {
  const canvas = document.getElementById("rate");
  const ctx = canvas.getContext("2d");
  const width = canvas.width, height = canvas.height, pad = 28;
  const now = minuteOf(new Date());
  const minutes = [];
  for (let i = MINUTES - 1; i >= 0; i--) minutes.push(now - i * 60000);
  const values = minutes.map((m) => perMinute.get(m) || 0);
  canvas.dataset.values = values.join(",");  // what is drawn, oldest minute first (and tests)
  const top = Math.max(5, ...values);
  ctx.clearRect(0, 0, width, height);
  ctx.fillStyle = "#6b7385";
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillText(String(top), 2, pad - 4);
  ctx.fillText("0", 2, height - pad + 4);
  ctx.strokeStyle = "#dfe3ea";
  ctx.beginPath(); ctx.moveTo(pad, pad); ctx.lineTo(pad, height - pad);
  ctx.lineTo(width - 4, height - pad); ctx.stroke();
  const step = (width - pad - 8) / minutes.length;
  values.forEach((value, i) => {
    const barHeight = (height - 2 * pad) * value / top;
    ctx.fillStyle = i === values.length - 1 ? "#3d7be0" : "#8fb3ef";
    ctx.fillRect(pad + 4 + i * step, height - pad - barHeight, step - 4, barHeight);
  });
  const first = new Date(minutes[0]), last = new Date(minutes[minutes.length - 1]);
  ctx.fillStyle = "#6b7385";
  ctx.fillText(first.toISOString().slice(11, 16), pad + 4, height - 8);
  ctx.fillText(last.toISOString().slice(11, 16) + " UTC", width - 70, height - 8);
}

function describe(data) {
  return Object.entries(data).map(([key, value]) => `${key}=${value}`).join(" ");
}

function addRow(event) {
  const row = document.createElement("tr");
  row.className = "new";
  row.dataset.eventType = event.event_type;
  row.dataset.eventId = event.event_id;
  const cells = [
    (event.timestamp || "").replace("T", " ").slice(0, 19), event.event_type,
    event.source || "", describe(event.data || {}),
  ].map((text, i) => {
    const cell = document.createElement("td");
    if (i === 3) { const code = document.createElement("code"); code.textContent = text; cell.append(code); }
    else cell.textContent = text;
    return cell;
  });
  row.append(...cells);
  const body = document.getElementById("events");
  body.prepend(row);
  while (body.children.length > MAX_ROWS) body.lastElementChild.remove();
}

function onEvent(event) {
  counts[event.event_type] = (counts[event.event_type] || 0) + 1;
  const minute = minuteOf(new Date(event.timestamp || Date.now()));
  perMinute.set(minute, (perMinute.get(minute) || 0) + 1);
  addRow(event);
  renderCounters();
  renderChart();
}

function setStatus(state, text) {
  const status = document.getElementById("status");
  status.className = "status " + state;
  status.textContent = text;
}

async function loadSummary() {
  try {
    const response = await fetch("/api/analytics/summary");
    if (!response.ok) throw new Error(response.status);
    const summary = await response.json();
    // The summary replaces what the stream counted while it loaded (those events are in it, or
    // analytics is a moment behind): counted once, never twice.
    Object.assign(counts, summary.events_by_type);
    perMinute.clear();
    for (const item of summary.events_per_minute) {
      const minute = minuteOf(new Date(item.minute));
      perMinute.set(minute, (perMinute.get(minute) || 0) + item.count);
    }
  } catch (error) {
    console.warn("summary unavailable; counting from now on", error);
  }
  renderCounters();
  renderChart();
}

let dropped = 0;  // events this page missed because it fell behind (the gateway says how many)

function liveStatus() {
  setStatus("live", dropped ? `live (${dropped} missed: this page fell behind)` : "live");
}

function onDropped(count) {
  dropped = count;
  liveStatus();
}

function transport(name) {
  document.getElementById("status").dataset.transport = name;
}

function followSse() {
  transport("sse");
  const source = new EventSource("/api/events/stream");
  source.onopen = () => { dropped = 0; liveStatus(); };
  source.onerror = () => setStatus("down", "reconnecting…");
  source.addEventListener("event", (message) => onEvent(JSON.parse(message.data)));
  source.addEventListener("dropped", (message) => onDropped(JSON.parse(message.data).dropped));
}

function follow() {
  if (!("WebSocket" in window)) { followSse(); return; }
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  let opened = false;
  let socket;
  try {
    socket = new WebSocket(`${scheme}//${location.host}/api/events/ws`);
  } catch (error) {
    followSse();
    return;
  }
  transport("websocket");
  socket.onopen = () => { opened = true; dropped = 0; liveStatus(); };
  socket.onmessage = (message) => {
    const data = JSON.parse(message.data);
    if (data.type === "event") onEvent(data.event);
    else if (data.type === "dropped") onDropped(data.dropped);
  };
  socket.onclose = () => {
    if (!opened) { followSse(); return; }  // never opened: WebSocket does not get through
    setStatus("down", "reconnecting…");
    setTimeout(follow, 2000);  // as the SSE stream's "retry: 2000"
  };
}

// Follow first, so that nothing published while the summary loads is missed on the page.
follow();
loadSummary();
setInterval(renderChart, 10000); // the minutes move on even when nothing happens
