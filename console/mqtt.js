// MQTT 5 (or 3.1.1) over a WebSocket: only what the duty console needs. CONNECT with a last
// will and a persistent session, SUBSCRIBE, QoS 0/1 PUBLISH both ways, PUBACK with its v5
// reason code (so a broker's refusal reaches the person who tapped), PINGREQ, DISCONNECT.
// Written for the console rather than taken from a library: a few hundred lines, no build step,
// nothing fetched from a CDN.

const enc = new TextEncoder();
const dec = new TextDecoder();

function varint(n) {
  const out = [];
  do {
    let b = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) b |= 0x80;
    out.push(b);
  } while (n > 0);
  return out;
}

function str(s) {
  const b = enc.encode(s);
  return [b.length >> 8, b.length & 0xff, ...b];
}

function bin(b) {
  return [b.length >> 8, b.length & 0xff, ...b];
}

function packet(type, body) {
  return new Uint8Array([type, ...varint(body.length), ...body]);
}

// Reason codes a person may see (MQTT 5, section 2.4); the rest are shown as numbers.
export const REASONS = {
  0x80: "unspecified error",
  0x84: "unsupported protocol version",
  0x86: "bad user name or password",
  0x87: "not authorized",
  0x8c: "bad authentication method",
  0x90: "topic name invalid",
  0x97: "quota exceeded",
  0x99: "payload format invalid",
};

export class MqttError extends Error {
  constructor(code, what) {
    super(`${what}: ${REASONS[code] || "reason"} (0x${code.toString(16)})`);
    this.code = code;
  }
}

// One connection at a time, re-made after every loss with back-off; events through callbacks:
// onState("connecting" | "connected" | "disconnected", detail), onMessage(topic, text, retained).
export class MqttClient {
  constructor(opts) {
    this.opts = Object.assign({ keepalive: 15, version: 5, sessionExpiry: 7 * 24 * 3600 }, opts);
    this.nextId = 1;
    this.pending = new Map(); // packet id -> {resolve, reject, kind}
    this.ws = null;
    this.buf = new Uint8Array(0);
    this.connected = false;
    this.closing = false;
    this.backoff = 1000;
    this.subscriptions = [];
  }

  start() {
    this.closing = false;
    this._open();
  }

  _open() {
    this.opts.onState?.("connecting");
    let ws;
    try {
      ws = new WebSocket(this.opts.url, ["mqtt"]);
    } catch (e) {
      this._lost(`cannot open ${this.opts.url}: ${e.message}`);
      return;
    }
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    ws.onopen = () => ws.send(this._connectPacket());
    ws.onmessage = (ev) => this._data(new Uint8Array(ev.data));
    ws.onerror = () => {};
    ws.onclose = (ev) => {
      if (this.ws === ws) this._lost(`connection closed (${ev.code})`);
    };
  }

  _lost(why) {
    const wasConnected = this.connected;
    this.connected = false;
    clearInterval(this.pinger);
    clearTimeout(this.pongTimer);
    this.ws = null;
    this.buf = new Uint8Array(0);
    for (const [, p] of this.pending) p.reject(new Error("connection lost before the broker confirmed"));
    this.pending.clear();
    this.opts.onState?.("disconnected", why);
    if (this.closing) return;
    if (wasConnected) this.backoff = 1000;
    const wait = this.backoff;
    this.backoff = Math.min(this.backoff * 2, 15000);
    this.retry = setTimeout(() => this._open(), wait);
  }

  _connectPacket() {
    const o = this.opts;
    const v5 = o.version === 5;
    let flags = 0x00; // no clean start: the broker keeps pages for a phone that was away
    const body = [...str("MQTT"), v5 ? 5 : 4];
    if (o.username) flags |= 0x80;
    if (o.password) flags |= 0x40;
    if (o.will) flags |= 0x04 | 0x08 | (o.will.retain ? 0x20 : 0); // will QoS 1
    body.push(flags, o.keepalive >> 8, o.keepalive & 0xff);
    if (v5) {
      const e = o.sessionExpiry;
      const props = [0x11, (e >>> 24) & 0xff, (e >>> 16) & 0xff, (e >>> 8) & 0xff, e & 0xff];
      body.push(...varint(props.length), ...props);
    }
    body.push(...str(o.clientId));
    if (o.will) {
      if (v5) body.push(0); // will properties: none
      body.push(...str(o.will.topic), ...bin(enc.encode(o.will.payload())));
    }
    if (o.username) body.push(...str(o.username));
    if (o.password) body.push(...bin(enc.encode(o.password)));
    return packet(0x10, body);
  }

  _data(chunk) {
    const b = new Uint8Array(this.buf.length + chunk.length);
    b.set(this.buf);
    b.set(chunk, this.buf.length);
    this.buf = b;
    for (;;) {
      let len = 0, mul = 1, i = 1;
      for (;;) {
        if (i >= this.buf.length) return;
        const c = this.buf[i++];
        len += (c & 0x7f) * mul;
        mul *= 128;
        if (!(c & 0x80)) break;
        if (i > 4) return this._protocolError("bad remaining length");
      }
      if (this.buf.length < i + len) return;
      const type = this.buf[0];
      const body = this.buf.subarray(i, i + len);
      this.buf = this.buf.slice(i + len);
      try {
        this._packet(type, body);
      } catch (e) {
        return this._protocolError(e.message);
      }
    }
  }

  _protocolError(why) {
    console.warn(`mqtt: ${why}; reconnecting`);
    const ws = this.ws;
    this._lost(why);
    try { ws?.close(); } catch (_) { /* already closed */ }
  }

  _packet(type, body) {
    const v5 = this.opts.version === 5;
    switch (type >> 4) {
      case 2: { // CONNACK
        const code = body[1];
        if (code !== 0) {
          const err = v5 ? new MqttError(code, "the broker refused the sign-in")
            : new MqttError(code === 4 || code === 5 ? 0x86 : 0x80, "the broker refused the sign-in");
          this.opts.onRefused?.(err);
          this.ws?.close();
          return;
        }
        this.connected = true;
        this.backoff = 1000;
        const ka = this.opts.keepalive * 1000;
        this.pinger = setInterval(() => this._ping(), ka);
        this.opts.onState?.("connected", body[0] & 1 ? "session resumed" : "new session");
        return;
      }
      case 3: { // PUBLISH
        const qos = (type >> 1) & 3;
        const retained = (type & 1) === 1;
        let p = 0;
        const tlen = (body[p] << 8) | body[p + 1];
        const topic = dec.decode(body.subarray(p + 2, p + 2 + tlen));
        p += 2 + tlen;
        let id = 0;
        if (qos > 0) {
          id = (body[p] << 8) | body[p + 1];
          p += 2;
        }
        if (v5) {
          let plen = 0, mul = 1, c;
          do {
            c = body[p++];
            plen += (c & 0x7f) * mul;
            mul *= 128;
          } while (c & 0x80);
          p += plen;
        }
        const text = dec.decode(body.subarray(p));
        if (qos === 1) this.ws?.send(packet(0x40, [id >> 8, id & 0xff]));
        this.opts.onMessage?.(topic, text, retained);
        return;
      }
      case 4: { // PUBACK
        const id = (body[0] << 8) | body[1];
        const code = v5 && body.length > 2 ? body[2] : 0;
        const p = this.pending.get(id);
        if (!p) return;
        this.pending.delete(id);
        if (code >= 0x80) p.reject(new MqttError(code, "the broker refused the message"));
        else p.resolve(code);
        return;
      }
      case 9: { // SUBACK
        const id = (body[0] << 8) | body[1];
        let p = 2;
        if (v5) {
          let plen = 0, mul = 1, c;
          do {
            c = body[p++];
            plen += (c & 0x7f) * mul;
            mul *= 128;
          } while (c & 0x80);
          p += plen;
        }
        const codes = Array.from(body.subarray(p));
        const pend = this.pending.get(id);
        if (!pend) return;
        this.pending.delete(id);
        const bad = codes.find((c) => c >= 0x80);
        if (bad !== undefined) pend.reject(new MqttError(bad, "the broker refused a subscription"));
        else pend.resolve(codes);
        return;
      }
      case 13: // PINGRESP
        clearTimeout(this.pongTimer);
        return;
      case 14: { // DISCONNECT from the broker (v5)
        const code = body.length > 0 ? body[0] : 0;
        console.warn(`mqtt: the broker disconnected us (0x${code.toString(16)})`);
        return;
      }
      default:
        return;
    }
  }

  _ping() {
    if (!this.connected) return;
    this.ws?.send(new Uint8Array([0xc0, 0]));
    clearTimeout(this.pongTimer);
    // No answer within a keepalive: the link is dead even if the socket has not noticed.
    this.pongTimer = setTimeout(() => this._protocolError("no answer to ping"), this.opts.keepalive * 1000);
  }

  _id() {
    for (;;) {
      const id = this.nextId;
      this.nextId = this.nextId >= 65535 ? 1 : this.nextId + 1;
      if (!this.pending.has(id)) return id;
    }
  }

  // Resolves when the broker has the message (QoS 1: its PUBACK); rejects with MqttError when
  // it refused it (v5 reason code) or when the connection was lost first.
  publish(topic, text, { qos = 1, retain = false } = {}) {
    if (!this.connected) return Promise.reject(new Error("not connected to the broker"));
    const body = [...str(topic)];
    let id = 0;
    if (qos > 0) {
      id = this._id();
      body.push(id >> 8, id & 0xff);
    }
    if (this.opts.version === 5) body.push(0);
    body.push(...enc.encode(text));
    const type = 0x30 | (qos << 1) | (retain ? 1 : 0);
    if (qos === 0) {
      this.ws.send(packet(type, body));
      return Promise.resolve(0);
    }
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.ws.send(packet(type, body));
    });
  }

  subscribe(filters) {
    if (!this.connected) return Promise.reject(new Error("not connected to the broker"));
    const id = this._id();
    const body = [id >> 8, id & 0xff];
    if (this.opts.version === 5) body.push(0);
    for (const f of filters) body.push(...str(f), 1);
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.ws.send(packet(0x82, body));
    });
  }

  // A clean goodbye: the will is not published (the caller publishes its own last word first).
  end() {
    this.closing = true;
    clearTimeout(this.retry);
    clearInterval(this.pinger);
    if (this.ws && this.connected) {
      try {
        this.ws.send(this.opts.version === 5 ? new Uint8Array([0xe0, 1, 0]) : new Uint8Array([0xe0, 0]));
        this.ws.close();
      } catch (_) { /* closing anyway */ }
    }
    this.connected = false;
  }
}
