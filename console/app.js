// The duty console: signs in to the broker as the staff member, shows the site's open alerts
// from the gateway's own retained documents, rings while an alert paged to this person is
// unclaimed, and sends actions whose broker confirmation (PUBACK) is what the page shows.
// It never guesses an alert's state: only the gateway's document changes what is shown.

import { MqttClient, MqttError } from "./mqtt.js";
import { WORDS } from "./words.js";

const $ = (sel) => document.querySelector(sel);
const params = new URLSearchParams(location.search);
const log = (...a) => console.log("bandgate:", ...a);

let W = WORDS["zh-CN"];
let site = null; // /console.json
let me = null; // {u, p}
let client = null;
let connected = false;
let armed = false;
let ringing = false;
const alerts = new Map(); // alert_id -> document
const feedback = new Map(); // alert_id -> {text, error}
const confirming = new Map(); // alert_id -> {label, action, resolution}
const deliveredFor = new Set(); // `${alert_id}@${updated_at}` already answered with `delivered`
const shown = new Set(); // alert ids drawn at least once (logged once: `shown <id>`)

// ---------- sign-in ----------

function readFragment() {
  if (!location.hash.startsWith("#")) return null;
  const f = new URLSearchParams(location.hash.slice(1));
  const u = f.get("u"), p = f.get("p");
  // The credentials leave the address bar (and the history) at once.
  history.replaceState(null, "", location.pathname + location.search);
  return u && p ? { u, p } : null;
}

function remembered() {
  try {
    const v = JSON.parse(localStorage.getItem("bandgate.signin") || "null");
    return v && v.u && v.p ? v : null;
  } catch (_) {
    return null;
  }
}

function clientId() {
  let id = localStorage.getItem("bandgate.client_id");
  if (!id) {
    const r = new Uint8Array(6);
    crypto.getRandomValues(r);
    id = "console-" + Array.from(r, (b) => b.toString(16).padStart(2, "0")).join("");
    localStorage.setItem("bandgate.client_id", id);
  }
  return id;
}

function signIn(creds) {
  me = creds;
  localStorage.setItem("bandgate.signin", JSON.stringify(creds));
  $("#signin").hidden = true;
  $("#duty").hidden = false;
  $("#who").textContent = creds.u;
  connect();
}

function signOut() {
  goodbye();
  me = null;
  localStorage.removeItem("bandgate.signin");
  alerts.clear();
  armed = false;
  stopRinging();
  $("#duty").hidden = true;
  $("#signin").hidden = false;
  render();
}

// ---------- broker ----------

const p = () => site.topic_prefix;
const presenceTopic = () => `${p()}/phones/${me.u}/${clientId()}`;
const presence = (online) => JSON.stringify({ online, armed: online && armed, at: new Date().toISOString() });

function connect() {
  const url = site.broker_url.replaceAll("{host}", location.hostname);
  client = new MqttClient({
    url,
    version: site.mqtt_version === 4 ? 4 : 5,
    clientId: clientId(),
    username: me.u,
    password: me.p,
    keepalive: 15,
    will: { topic: presenceTopic(), payload: () => presence(false), retain: true },
    onState: (state, detail) => {
      connected = state === "connected";
      log("broker", state, detail || "");
      if (connected) onConnected();
      else if (state === "disconnected") $("#notice").textContent = W.brokerUnreachable;
      render();
    },
    onRefused: (err) => {
      $("#notice").textContent = W.signInRefused(reasonText(err));
      log("sign-in refused", err.message);
    },
    onMessage,
  });
  client.start();
}

async function onConnected() {
  $("#notice").textContent = "";
  try {
    await client.subscribe([`${p()}/alerts/+`, `${p()}/notify/${me.u}`]);
    await publishPresence();
  } catch (e) {
    log("subscribe failed", e.message);
    $("#notice").textContent = reasonText(e);
  }
}

function publishPresence() {
  if (!client || !connected) return Promise.resolve();
  return client.publish(presenceTopic(), presence(true), { qos: 1, retain: true }).catch((e) => log("presence not sent", e.message));
}

// The page is closing: say so before the socket goes (the last will covers a lost connection).
function goodbye() {
  if (client && connected) {
    client.publish(presenceTopic(), presence(false), { qos: 0, retain: true }).catch(() => {});
  }
  client?.end();
  client = null;
  connected = false;
}

function newer(a, b) {
  return !b || a.updated_at >= b.updated_at;
}

function onMessage(topic, text, retained) {
  const parts = topic.split("/");
  const kind = parts[parts.length - 2];
  const id = parts[parts.length - 1];
  if (kind === "alerts") {
    if (text === "") {
      alerts.delete(id);
    } else {
      const doc = parse(text);
      if (doc && doc.alert_id && newer(doc, alerts.get(doc.alert_id))) alerts.set(doc.alert_id, doc);
    }
  } else if (kind === "notify") {
    const n = parse(text);
    if (n && n.alert && n.alert.alert_id) {
      log("page", n.reason, n.alert.alert_id, retained ? "(retained)" : "");
      if (newer(n.alert, alerts.get(n.alert.alert_id))) alerts.set(n.alert.alert_id, n.alert);
    }
  }
  render();
  answerDelivered();
}

function parse(text) {
  try {
    const v = JSON.parse(text);
    return v && typeof v === "object" ? v : null;
  } catch (_) {
    log("ignored a message that is not JSON");
    return null;
  }
}

// `delivered` says a person can perceive the page: the console rings (armed) or is on screen.
// An unarmed console in a pocket does not claim it, so the gateway's fallback still reaches them.
function answerDelivered() {
  if (!connected || !(armed || document.visibilityState === "visible")) return;
  for (const a of alerts.values()) {
    const key = `${a.alert_id}@${a.updated_at}`;
    if (a.state === "resolved" || deliveredFor.has(key)) continue;
    if (!(a.notified || []).includes(me.u) || (a.delivered_to || []).includes(me.u)) continue;
    deliveredFor.add(key);
    client.publish(`${p()}/ack/${me.u}`, JSON.stringify({ alert_id: a.alert_id, action: "delivered" }), { qos: 1 })
      .then(() => log("delivered", a.alert_id))
      .catch((e) => {
        deliveredFor.delete(key);
        log("delivered not sent", a.alert_id, e.message);
      });
  }
}

function reasonText(e) {
  if (e instanceof MqttError) return `${W.reasons[e.code] || e.message} (0x${e.code.toString(16)})`;
  if (e && /lost/.test(e.message)) return W.lostBeforeConfirm;
  if (e && /not connected/.test(e.message)) return W.notConnected;
  return e ? e.message : "?";
}

function act(alert, action, resolution, label) {
  confirming.delete(alert.alert_id);
  const msg = { alert_id: alert.alert_id, action };
  if (resolution) msg.resolution = resolution;
  feedback.set(alert.alert_id, { text: W.sending, error: false });
  render();
  const send = client && connected
    ? client.publish(`${p()}/ack/${me.u}`, JSON.stringify(msg), { qos: 1 })
    : Promise.reject(new Error("not connected"));
  send.then(
    () => {
      log("action confirmed by the broker", action, alert.alert_id);
      feedback.set(alert.alert_id, { text: W.sent(label), error: false });
      render();
    },
    (e) => {
      log("action refused", action, alert.alert_id, e.message);
      feedback.set(alert.alert_id, { text: W.refused(reasonText(e)), error: true });
      render();
    },
  );
}

// ---------- sound ----------

let audio = null;
let ringTimer = null;

function arm() {
  // Only inside a tap may a page start sound (autoplay policy): this is that tap.
  try {
    audio = audio || new (window.AudioContext || window.webkitAudioContext)();
    audio.resume();
    beep(0, 660, 0.15);
  } catch (e) {
    log("no sound", e.message);
  }
  navigator.vibrate?.(150);
  if ("wakeLock" in navigator) navigator.wakeLock.request("screen").catch(() => {});
  armed = true;
  log("armed");
  publishPresence();
  render();
  answerDelivered();
}

function beep(at, freq, len) {
  if (!audio) return;
  const t = audio.currentTime + at;
  const osc = audio.createOscillator();
  const gain = audio.createGain();
  osc.type = "square";
  osc.frequency.value = freq;
  gain.gain.setValueAtTime(0.0001, t);
  gain.gain.exponentialRampToValueAtTime(0.6, t + 0.02);
  gain.gain.exponentialRampToValueAtTime(0.0001, t + len);
  osc.connect(gain).connect(audio.destination);
  osc.start(t);
  osc.stop(t + len + 0.05);
}

function ringOnce() {
  beep(0, 880, 0.35);
  beep(0.45, 660, 0.35);
  beep(0.9, 880, 0.35);
  navigator.vibrate?.([500, 250, 500]);
}

function startRinging() {
  if (ringing) return;
  ringing = true;
  log("ringing on");
  ringOnce();
  ringTimer = setInterval(ringOnce, 2000);
}

function stopRinging() {
  if (!ringing) return;
  ringing = false;
  clearInterval(ringTimer);
  navigator.vibrate?.(0);
  log("ringing off");
}

function mustRing() {
  if (!armed || !me) return false;
  for (const a of alerts.values()) {
    if (a.state === "open" && (a.notified || []).includes(me.u) && !(a.declined || []).includes(me.u)) return true;
  }
  return false;
}

// ---------- drawing ----------

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

function nameOf(a, id) {
  return (a.names && a.names[id]) || id;
}

function stateWords(a) {
  switch (a.state) {
    case "open": return W.open;
    case "acknowledged": return W.acknowledged(nameOf(a, a.acked_by));
    case "on_scene": return W.onScene;
    case "resolved": return W.resolved;
    default: return a.state;
  }
}

// The buttons this person may press in this state (who may act: mqtt-contract.md).
function buttons(a) {
  const sup = (site.supervisors || []).includes(me.u);
  const paged = (a.notified || []).includes(me.u);
  const claimer = a.acked_by === me.u;
  const out = [];
  const verify = a.cancel_requested ? [[W.resolveVerified, "resolve", "wearer_cancel_verified", true]] : [];
  if (a.state === "open" && (paged || sup)) {
    out.push([W.ack, "ack", null, false, "primary"], [W.decline, "decline", null, false], ...verify);
  } else if (a.state === "acknowledged" && (claimer || sup)) {
    out.push([W.onSceneBtn, "on_scene", null, false, "primary"], [W.resolveReal, "resolve", "real_emergency", true],
      [W.resolveFalse, "resolve", "false_alarm", true], ...verify);
  } else if (a.state === "on_scene" && (claimer || sup)) {
    out.push([W.resolveReal, "resolve", "real_emergency", true, "primary"], [W.resolveFalse, "resolve", "false_alarm", true], ...verify);
  }
  return out;
}

function minutesAgo(t) {
  return Math.max(0, Math.floor((Date.now() - Date.parse(t)) / 60000));
}

function localTime(t) {
  const d = new Date(t);
  return d.toLocaleString(W === WORDS.en ? "en-GB" : "zh-CN", { month: "numeric", day: "numeric", hour: "2-digit", minute: "2-digit" });
}

function alertRegion(a) {
  const r = a.resident;
  const who = r ? r.name : W.gatewayNotice;
  const kind = W.kinds[a.kind] || a.kind;
  const pagedMe = (a.notified || []).includes(me.u);
  const region = el("section", { role: "region", "aria-label": `${who} ${kind}`, class: `alert state-${a.state}${pagedMe ? " paged-me" : ""}`, "data-alert-id": a.alert_id });
  region.append(el("h2", {}, el("span", { class: "kind" }, kind), " ", who, pagedMe && a.state !== "resolved" ? el("span", { class: "badge" }, W.pagedMe) : null));
  region.append(el("p", { class: "state" }, stateWords(a)));
  if (a.cancel_requested && a.state !== "resolved") region.append(el("p", { class: "banner", role: "note" }, W.cancelBanner));
  if (r) {
    region.append(el("p", { class: "address" }, `${W.address}：${r.address}`));
    if (r.notes) region.append(el("p", { class: "notes" }, `${W.notes}：${r.notes}`));
  } else if (a.text) {
    region.append(el("p", { class: "notes" }, a.text));
  }
  region.append(el("p", { class: "meta" }, `${W.tier(a.tier)} · ${W.raised} ${localTime(a.raised_at)} · ${W.ago(minutesAgo(a.raised_at))}`));
  const others = (a.notified || []).filter((s) => s !== me.u).map((s) => nameOf(a, s));
  region.append(el("p", { class: "meta" }, W.alsoPaged + (others.length ? others.join("、") : W.nobodyElse)));
  const row = el("div", { class: "actions" });
  if (r && r.phone) row.append(el("a", { href: `tel:${r.phone}`, class: "call" }, W.call));
  const c = confirming.get(a.alert_id);
  if (c && a.state !== "resolved") {
    row.append(el("p", { class: "question" }, W.confirmQuestion(c.label)));
    row.append(el("button", { class: "primary", onclick: () => act(a, c.action, c.resolution, c.label) }, W.confirm));
    row.append(el("button", { onclick: () => { confirming.delete(a.alert_id); render(); } }, W.back));
  } else {
    for (const [label, action, resolution, confirm, cls] of buttons(a)) {
      const onclick = confirm
        ? () => { confirming.set(a.alert_id, { label, action, resolution }); render(); }
        : () => act(a, action, resolution, label);
      row.append(el("button", { class: cls || "", onclick }, label));
    }
  }
  region.append(row);
  const f = feedback.get(a.alert_id);
  if (f) region.append(el("p", f.error ? { class: "error", role: "alert" } : { class: "sent" }, f.text));
  return region;
}

function order(a, b) {
  const rank = (x) => ((x.notified || []).includes(me.u) ? 0 : 2) + (x.state === "resolved" ? 1 : 0);
  return rank(a) - rank(b) || (b.raised_at > a.raised_at ? 1 : -1);
}

function render() {
  const status = $("#status");
  let word = !connected ? W.disconnected : !armed ? W.unarmed : W.onDuty;
  const ring = mustRing();
  if (ring) startRinging();
  else stopRinging();
  if (ringing) word += ` · ${W.ringing}`;
  if (status.textContent !== word) status.textContent = word;
  status.className = !connected ? "bad" : !armed ? "warn" : "ok";
  document.title = ringing ? `🔔 ${W.title}` : W.title;
  $("#arm").hidden = armed || !me;
  if (!me) return;
  const list = $("#alerts");
  const sorted = [...alerts.values()].sort(order);
  list.replaceChildren(...(sorted.length ? sorted.map(alertRegion) : [el("p", { class: "empty" }, W.noAlerts)]));
  for (const a of sorted) {
    if (!shown.has(a.alert_id)) {
      shown.add(a.alert_id);
      log("shown", a.alert_id);
    }
  }
}

// ---------- start ----------

function words() {
  document.documentElement.lang = W === WORDS.en ? "en" : "zh-CN";
  for (const e of document.querySelectorAll("[data-w]")) e.textContent = W[e.dataset.w];
}

async function main() {
  const res = await fetch("console.json", { cache: "no-cache" });
  site = await res.json();
  const lang = params.get("lang") || (site.locale === "en" ? "en" : "zh-CN");
  W = lang === "en" ? WORDS.en : WORDS["zh-CN"];
  words();
  $("#arm").addEventListener("click", arm);
  $("#signout").addEventListener("click", signOut);
  $("#signin").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const u = $("#u").value.trim(), pw = $("#p").value;
    if (u && pw) signIn({ u, p: pw });
  });
  document.addEventListener("visibilitychange", answerDelivered);
  window.addEventListener("pagehide", goodbye);
  setInterval(render, 15000); // "2 分钟前" moves on
  if ("serviceWorker" in navigator && window.isSecureContext) {
    navigator.serviceWorker.register("sw.js").then(
      () => log("offline cache registered"),
      (e) => log("no offline cache", e.message),
    );
  }
  const creds = readFragment() || remembered();
  render();
  if (creds) signIn(creds);
  else $("#signin").hidden = false;
}

main().catch((e) => {
  log("failed to start", e.message);
  $("#notice").textContent = e.message;
});
