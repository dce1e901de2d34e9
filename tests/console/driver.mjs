// Drives headless Chromium for the Rust integration tests (tests/it/harness/browser.rs): one
// JSON command per line on stdin, one JSON answer per line on stdout. Each "phone" is its own
// browser context (its own storage, so its own MQTT client id), phone-sized, zh-CN.
//
// Reading a page never gives it a user activation: Playwright's evaluate, locators and
// screenshots all count as one in Chromium, so `html`, `status` and `wait_*` read the DOM
// through a CDP session (DOM.getOuterHTML) instead. Only `click`, `fill` and `screenshot` touch
// the page as a person would, and a test uses them only where a person would have tapped.

import readline from "node:readline";
import { chromium } from "playwright-core";

const executablePath = process.env.BANDGATE_CHROMIUM || "/usr/bin/chromium";
const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    // The autoplay policy under test is Chromium's default one: no flag here relaxes it.
    // A test may add flags (the HTTPS test trusts its throwaway certificate this way).
    ...(process.env.BANDGATE_CHROMIUM_ARGS || "").split(" ").filter(Boolean),
  ],
});

const phones = new Map(); // name -> {context, page, cdp, logs}

async function openPage(phone, url) {
  const page = await phone.context.newPage();
  page.on("console", (m) => {
    // Stamped on arrival (epoch ms with a fraction), for the console benchmark.
    const at = performance.timeOrigin + performance.now();
    phone.logs.push(`${m.type()}: ${m.text()}`);
    phone.stamped.push({ at, text: m.text() });
  });
  page.on("pageerror", (e) => phone.logs.push(`pageerror: ${e.message}`));
  phone.page = page;
  phone.cdp = await phone.context.newCDPSession(page);
  await page.goto(url, { waitUntil: "load" });
}

async function html(phone) {
  const { root } = await phone.cdp.send("DOM.getDocument", { depth: 0 });
  const { outerHTML } = await phone.cdp.send("DOM.getOuterHTML", { nodeId: root.nodeId });
  return outerHTML;
}

function statusText(h) {
  const m = h.match(/<p id="status"[^>]*>([^<]*)<\/p>/);
  return m ? m[1] : null;
}

// The regions (one per alert) as {label, html}.
function regions(h) {
  const out = [];
  const re = /<section role="region" aria-label="([^"]*)"[\s\S]*?<\/section>/g;
  for (const m of h.matchAll(re)) out.push({ label: m[1], html: m[0] });
  return out;
}

function textOf(h) {
  return h.replace(/<[^>]*>/g, " ").replace(/&amp;/g, "&").replace(/\s+/g, " ");
}

async function poll(timeoutMs, check) {
  const end = Date.now() + timeoutMs;
  let last;
  for (;;) {
    last = await check();
    if (last.ok) return last;
    if (Date.now() > end) return last;
    await new Promise((r) => setTimeout(r, 50));
  }
}

const commands = {
  async open({ phone: name, url, width = 390, height = 844 }) {
    let phone = phones.get(name);
    if (!phone) {
      const context = await browser.newContext({ viewport: { width, height }, locale: "zh-CN", timezoneId: "Asia/Shanghai", deviceScaleFactor: 2, isMobile: true, hasTouch: true });
      phone = { context, logs: [], stamped: [] };
      phones.set(name, phone);
    }
    await openPage(phone, url);
    return {};
  },
  // Closes the page the way a person closes a tab (pagehide runs).
  async close({ phone: name }) {
    const phone = phones.get(name);
    await phone.page.close({ runBeforeUnload: true });
    phone.page = null;
    return {};
  },
  async html({ phone }) {
    return { html: await html(phones.get(phone)) };
  },
  async status({ phone }) {
    return { status: statusText(await html(phones.get(phone))) };
  },
  // Waits until the status element's text satisfies `includes` / `excludes`.
  async wait_status({ phone, includes = [], excludes = [], timeout_ms = 10000 }) {
    const p = phones.get(phone);
    const r = await poll(timeout_ms, async () => {
      const s = statusText(await html(p)) || "";
      return { ok: includes.every((w) => s.includes(w)) && !excludes.some((w) => s.includes(w)), status: s };
    });
    if (!r.ok) throw new Error(`status is ${JSON.stringify(r.status)}, wanted ${JSON.stringify({ includes, excludes })}`);
    return { status: r.status };
  },
  // Waits until the region whose name contains `name` holds every text in `texts` (and none of
  // `absent`); answers its text and the buttons in it.
  async wait_region({ phone, name, texts = [], absent = [], timeout_ms = 10000 }) {
    const p = phones.get(phone);
    const r = await poll(timeout_ms, async () => {
      const region = regions(await html(p)).find((x) => x.label.includes(name));
      if (!region) return { ok: false, text: "(no such region)" };
      const text = textOf(region.html);
      const buttons = [...region.html.matchAll(/<button[^>]*>([^<]*)<\/button>/g)].map((m) => m[1]);
      return { ok: texts.every((t) => text.includes(t)) && !absent.some((t) => text.includes(t)), text, buttons };
    });
    if (!r.ok) throw new Error(`region ${JSON.stringify(name)}: ${r.text}; wanted ${JSON.stringify(texts)} without ${JSON.stringify(absent)}`);
    return { text: r.text, buttons: r.buttons };
  },
  // A person's tap on a button (by its exact accessible name) inside the region named `name`
  // (or anywhere with no region).
  async click({ phone, region, button }) {
    const page = phones.get(phone).page;
    const scope = region ? page.getByRole("region", { name: region }) : page;
    await scope.getByRole("button", { name: button, exact: true }).click({ timeout: 10000 });
    return {};
  },
  async fill({ phone, label, value }) {
    await phones.get(phone).page.getByLabel(label, { exact: true }).fill(value, { timeout: 10000 });
    return {};
  },
  // What a person sees of the sizes, read through CDP (no activation): every button's and
  // link's rendered box (CSS px) with its text, and the body text's computed font size.
  async sizes({ phone }) {
    const cdp = phones.get(phone).cdp;
    await cdp.send("CSS.enable").catch(() => {});
    const { root } = await cdp.send("DOM.getDocument", { depth: -1 });
    const { nodeIds } = await cdp.send("DOM.querySelectorAll", { nodeId: root.nodeId, selector: "button:not([hidden]), a[href]" });
    const boxes = [];
    for (const nodeId of nodeIds) {
      let model;
      try {
        ({ model } = await cdp.send("DOM.getBoxModel", { nodeId }));
      } catch (_) {
        continue; // not rendered (hidden)
      }
      const { outerHTML } = await cdp.send("DOM.getOuterHTML", { nodeId });
      boxes.push({ text: textOf(outerHTML).trim(), width: model.width, height: model.height });
    }
    const { nodeId: body } = await cdp.send("DOM.querySelector", { nodeId: root.nodeId, selector: "body" });
    const { computedStyle } = await cdp.send("CSS.getComputedStyleForNode", { nodeId: body });
    const font = computedStyle.find((p) => p.name === "font-size").value;
    return { boxes, body_font_px: parseFloat(font) };
  },
  // Console messages since the last call.
  async logs({ phone }) {
    const p = phones.get(phone);
    const logs = p.logs;
    p.logs = [];
    return { logs };
  },
  // Waits for a console message containing `contains`; answers when it arrived (epoch ms).
  async wait_log({ phone, contains, timeout_ms = 10000 }) {
    const p = phones.get(phone);
    const r = await poll(timeout_ms, async () => {
      const i = p.stamped.findIndex((m) => m.text.includes(contains));
      if (i < 0) return { ok: false };
      const [m] = p.stamped.splice(0, i + 1).slice(-1);
      return { ok: true, at_ms: m.at };
    });
    if (!r.ok) throw new Error(`no console message with ${JSON.stringify(contains)}`);
    return { at_ms: r.at_ms };
  },
  async screenshot({ phone, path }) {
    await phones.get(phone).page.screenshot({ path, fullPage: false });
    return {};
  },
  async quit() {
    await browser.close();
    setTimeout(() => process.exit(0), 10);
    return {};
  },
};

const rl = readline.createInterface({ input: process.stdin });
process.stdout.write(JSON.stringify({ ready: true, version: browser.version() }) + "\n");
for await (const line of rl) {
  let answer;
  try {
    const cmd = JSON.parse(line);
    const f = commands[cmd.cmd];
    if (!f) throw new Error(`unknown command ${cmd.cmd}`);
    answer = { ok: true, ...(await f(cmd)) };
  } catch (e) {
    answer = { ok: false, error: String(e && e.message ? e.message : e) };
  }
  process.stdout.write(JSON.stringify(answer) + "\n");
}
await browser.close();
