// An independent client as referee: links Baileys against a standalone wagate-sandbox and checks
// that it behaves as it would against WhatsApp.
//
//   node referee.mjs http://127.0.0.1:PORT
//
// Prints one line per scenario (`ok <name> <ms>` or `FAIL <name>: <reason>`), then every warn or
// error Baileys logged (lines that show a sandbox difference start with `!`). Exits 0 only when
// every scenario passed and no such line was logged. REFEREE_LOG=info|debug|trace echoes every
// Baileys log record to stderr.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import makeWASocket, {
  Curve,
  DisconnectReason,
  jidDecode,
  useMultiFileAuthState,
  WA_CERT_DETAILS,
} from 'baileys';
import pino from 'pino';

// The sandbox's Noise certificate chain has WhatsApp's shape and real signatures, but its root
// key is not WhatsApp's, which it cannot sign with. Skip exactly that one check (the
// intermediate certificate against WhatsApp's root key, Utils/noise-handler.js), as the Rust
// client's `danger-skip-cert-chain-verify` does; every other signature is still verified.
const verify = Curve.verify;
Curve.verify = (key, message, signature) =>
  Buffer.compare(Buffer.from(key), WA_CERT_DETAILS.PUBLIC_KEY) === 0 ||
  verify(key, message, signature);

/** How long one scenario may take; a link includes Baileys' wait for the initial sync (20 s). */
const SCENARIO_TIMEOUT_MS = 45_000;

/**
 * Warnings that mean the sandbox answered differently from WhatsApp, with the Baileys source
 * that logs them (node_modules/baileys/lib/...).
 */
const SANDBOX_DIFFERENCES = [
  // Socket/socket.js digestKeyBundle: the digest answer has no <digest>, so it re-uploads prekeys.
  /digest/i,
  // Socket/socket.js uploadPreKeys / uploadPreKeysToServerIfRequired.
  /pre-?key/i,
  // Socket/chats.js: no history-sync notification within 20 s of the offline marker.
  /AwaitingInitialSync/,
  // Utils/event-buffer.js: events stayed buffered for 30 s.
  /Buffer timeout reached/,
  // Socket/socket.js waitForMessage: a query got no answer.
  /timed out waiting for message/,
  // Socket/socket.js CB:success: going active failed.
  /failed to send initial passive iq/,
  // onUnexpectedError, e.g. an init query (abt, blocklist, privacy) answered with an error.
  /unexpected error in/,
  /error in sending keep alive/,
  // Signal/lid-mapping.js: a usync <lid/> query for a phone number came back without its LID.
  /USync fetch yielded no results/,
  // Socket/chats.js resyncAppState.
  /failed to sync .* giving up|blocked on missing key/,
  // Socket/messages-recv.js, Utils/decode-wa-message.js, Utils/process-message.js.
  /error in handling message|failed to decrypt|failed to handle devices notification|failed to ack/,
  /dropping spoofed self-only protocolMessage/,
];

const base = (process.argv[2] ?? '').replace(/\/+$/, '');
if (!/^http:\/\/[^/]+$/.test(base)) {
  console.error('usage: node referee.mjs http://127.0.0.1:PORT');
  process.exit(2);
}
const wsUrl = `${base.replace(/^http:/, 'ws:')}/ws/chat`;

// ---- logging: quiet, but every warn and error is kept ------------------------------------------

const captured = [];
/** The scenario running now; each captured line names it. */
let current = '-';
/**
 * The sockets the referee itself ended (by number). Baileys may still be finishing work on one
 * (an app-state query after the history, a receipt); its "Connection Closed" errors then come
 * from the referee, not from the sandbox, and are shown but not counted as differences.
 */
const endedByReferee = new Set();
let socketsMade = 0;
const echo = process.env.REFEREE_LOG;
const LEVELS = { 10: 'trace', 20: 'debug', 30: 'info', 40: 'warn', 50: 'error', 60: 'fatal' };

const sink = {
  write(line) {
    if (echo) {
      process.stderr.write(line);
    }
    let record;
    try {
      record = JSON.parse(line);
    } catch {
      return;
    }
    if (record.level < 40) {
      return;
    }
    const { level, time, pid, hostname, msg, class: _class, socket, ...rest } = record;
    const details = JSON.stringify(rest, (key, value) =>
      key === 'stack' || key === 'trace' ? undefined : value,
    );
    const text = `${LEVELS[level] ?? level} [${current}] ${msg ?? ''}${
      details === '{}' ? '' : ` ${details.slice(0, 400)}`
    }`;
    const ourClose = endedByReferee.has(socket) && /Connection Closed/.test(text);
    captured.push({
      text: ourClose ? `${text} (after the referee ended socket ${socket})` : text,
      difference: !ourClose && SANDBOX_DIFFERENCES.some((re) => re.test(text)),
    });
  },
};

// A promise Baileys left unhandled would end the process; it is reported like a warning.
process.on('unhandledRejection', (error) => {
  captured.push({
    text: `error [${current}] unhandled rejection: ${error?.stack ?? error}`.slice(0, 600),
    difference: true,
  });
});

const errorSerializer = pino.stdSerializers.err;
const rootLogger = pino(
  {
    level: echo ?? 'warn',
    serializers: { err: errorSerializer, e: errorSerializer, error: errorSerializer },
  },
  sink,
);

// ---- small helpers ------------------------------------------------------------------------------

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function control(method, path, body) {
  const response = await fetch(`${base}${path}`, {
    method,
    headers: body ? { 'content-type': 'application/json' } : undefined,
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await response.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = text;
  }
  return { status: response.status, json };
}

/** The status code and message Baileys gave a closed connection. */
function closeReason(update) {
  const error = update.lastDisconnect?.error;
  return { code: error?.output?.statusCode, message: error?.message ?? String(error) };
}

/** The sandbox's form of a device JID: `user:device@s.whatsapp.net`. */
function sandboxJid(jid) {
  const decoded = jidDecode(jid);
  if (!decoded) {
    throw new Error(`not a JID: ${jid}`);
  }
  return `${decoded.user}:${decoded.device ?? 0}@${decoded.server}`;
}

/** One device's auth state in a fresh temp dir, saved on every creds.update. */
class Device {
  static async create(name) {
    const dir = await mkdtemp(join(tmpdir(), `wagate-baileys-${name}-`));
    const device = new Device(dir);
    await device.load();
    return device;
  }

  constructor(dir) {
    this.dir = dir;
    this.saving = Promise.resolve();
    /** Every socket started with this auth state; see `remove`. */
    this.clients = [];
  }

  /** Reads the auth state back from disk, as a restarted process would. */
  async load() {
    await this.saving;
    const { state, saveCreds } = await useMultiFileAuthState(this.dir);
    this.state = state;
    this.saveCreds = saveCreds;
  }

  /** Ends the device's sockets, then deletes its auth state. */
  async remove() {
    // An open socket would keep writing to the directory while it goes.
    for (const client of this.clients) {
      client.end();
    }
    await this.saving.catch(() => {});
    // A socket that is closing may still write a key file (Baileys writes keys straight to the
    // directory, not through saveCreds), so a removal can meet a file created after it listed the
    // directory (ENOTEMPTY); Node retries exactly those errors.
    await rm(this.dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 50 });
  }
}

/**
 * A Baileys socket and what its connection updates have shown so far, so a scenario can wait for
 * a state whichever order the updates came in.
 */
class Client {
  constructor(device) {
    this.number = ++socketsMade;
    this.seen = { qrs: [], open: false, pending: false, synced: false, close: undefined };
    this.waiters = new Set();
    device.clients.push(this);
    this.sock = makeWASocket({
      auth: device.state,
      waWebSocketUrl: wsUrl,
      logger: rootLogger.child({ socket: this.number }),
    });
    this.sock.ev.on('creds.update', (update) => {
      device.saving = device.saving.then(() => device.saveCreds()).catch(() => {});
      if (update.accountSyncCounter !== undefined) {
        this.note({ synced: true });
      }
    });
    this.sock.ev.on('connection.update', (update) => {
      if (update.qr) {
        this.note({ qrs: [...this.seen.qrs, update.qr] });
      }
      if (update.connection === 'open') {
        this.note({ open: true });
      }
      if (update.receivedPendingNotifications) {
        this.note({ pending: true });
      }
      if (update.connection === 'close') {
        this.note({ close: update });
      }
    });
  }

  note(change) {
    Object.assign(this.seen, change);
    for (const check of [...this.waiters]) {
      check();
    }
  }

  /**
   * Resolves with the first truthy `test(seen)`; rejects when it throws, or when the connection
   * closed and `test` does not accept that.
   */
  until(what, test) {
    return new Promise((resolve, reject) => {
      const check = () => {
        let value;
        try {
          value = test(this.seen);
        } catch (error) {
          this.waiters.delete(check);
          reject(error);
          return;
        }
        if (value) {
          this.waiters.delete(check);
          resolve(value);
        } else if (this.seen.close) {
          this.waiters.delete(check);
          const { code, message } = closeReason(this.seen.close);
          reject(new Error(`connection closed (${code}: ${message}) while waiting for ${what}`));
        }
      };
      this.waiters.add(check);
      check();
    });
  }

  end() {
    endedByReferee.add(this.number);
    if (!this.seen.close) {
      this.sock.end(undefined);
    }
  }
}

// ---- the scenarios ------------------------------------------------------------------------------

/** Every client a scenario started, ended when it finishes unless handed on. */
let started = [];

function connect(device) {
  const client = new Client(device);
  started.push(client);
  return client;
}

/**
 * Drives a new device from its first socket to `open`: `register(client, qr)` links it on the
 * first QR, then Baileys' restart after pairing (515) is followed with the saved creds.
 */
async function link(device, register) {
  const first = connect(device);
  const qr = await first.until('the first QR', (seen) => seen.qrs[0]);
  await register(first, qr);
  const closed = await first.until('the restart after pairing', (seen) => {
    if (seen.open) {
      throw new Error('opened without the restart Baileys expects after pairing');
    }
    return seen.close;
  });
  const { code, message } = closeReason(closed);
  if (code !== DisconnectReason.restartRequired) {
    throw new Error(`expected restartRequired (515) after pairing, got ${code} (${message})`);
  }
  const client = connect(device);
  await opened(client, { firstLogin: true });
  return client;
}

/**
 * Waits for `open` and the end of offline delivery; on a first login also for Baileys to settle
 * its initial sync (a history-sync notification, or its 20 s timeout, which it warns of).
 */
async function opened(client, { firstLogin }) {
  await client.until('open', (seen) => {
    if (seen.qrs.length) {
      throw new Error('Baileys showed a new QR instead of logging in with its saved creds');
    }
    return seen.open;
  });
  await client.until('the end of offline delivery', (seen) => seen.pending);
  if (firstLogin) {
    await client.until('the initial sync', (seen) => seen.synced);
    await handled(client);
  }
}

/**
 * Waits until the sandbox has Baileys' receipts for the phone's key share and initial history:
 * Baileys sends each receipt once it has handled the message, so ending the socket earlier would
 * cut its handling short.
 */
async function handled(client) {
  const deadline = Date.now() + SCENARIO_TIMEOUT_MS;
  for (;;) {
    const account = await accountOf(client);
    if (account.key_share === 'delivered' && account.history === 'delivered') {
      return;
    }
    if (Date.now() > deadline) {
      throw new Error(`the phone's messages were never acknowledged: ${JSON.stringify(account)}`);
    }
    await sleep(20);
  }
}

/** The sandbox's account for the client's own JID, or an error naming what it has. */
async function accountOf(client) {
  const id = client.sock.user?.id;
  if (!id) {
    throw new Error('Baileys has no user id');
  }
  const jid = sandboxJid(id);
  const { status, json } = await control('GET', '/accounts');
  if (status !== 200 || !Array.isArray(json)) {
    throw new Error(`GET /accounts answered ${status}: ${JSON.stringify(json)}`);
  }
  const account = json.find((a) => a.jid === jid);
  if (!account) {
    throw new Error(`GET /accounts has no ${jid} (Baileys' id ${id}): ${JSON.stringify(json)}`);
  }
  return account;
}

/** A phone number no account of this sandbox uses yet. */
async function unusedPhone() {
  const { json } = await control('GET', '/accounts');
  const used = new Set((Array.isArray(json) ? json : []).map((a) => a.phone));
  for (;;) {
    const phone = `62891${String(Math.floor(Math.random() * 1e7)).padStart(7, '0')}`;
    if (!used.has(phone)) {
      return phone;
    }
  }
}

const state = { device: undefined, live: undefined };

const scenarios = [
  [
    'qr-link',
    async () => {
      state.device = await Device.create('qr');
      state.live = await link(state.device, async (_client, qr) => {
        const { status, json } = await control('POST', '/phone/scan', { qr });
        if (status !== 200) {
          throw new Error(`POST /phone/scan answered ${status}: ${JSON.stringify(json)}`);
        }
      });
      const account = await accountOf(state.live);
      if (!account.connected) {
        throw new Error(`the sandbox shows ${account.jid} as not connected`);
      }
    },
  ],
  [
    'reconnect',
    async () => {
      if (!state.device?.state.creds.me) {
        throw new Error('no linked device (qr-link failed)');
      }
      state.live?.end();
      state.live = undefined;
      await state.device.load();
      const client = connect(state.device);
      await opened(client, { firstLogin: false });
      state.live = client;
    },
  ],
  [
    'unlink-logged-out',
    async () => {
      if (!state.live || state.live.seen.close) {
        throw new Error('no open socket (reconnect failed)');
      }
      const client = state.live;
      const account = await accountOf(client);
      const { status, json } = await control('POST', '/phone/unlink', { jid: account.jid });
      if (status !== 200 || json?.unlinked !== account.jid) {
        throw new Error(`POST /phone/unlink answered ${status}: ${JSON.stringify(json)}`);
      }
      const closed = await client.until('the close after the unlink', (seen) => seen.close);
      const { code, message } = closeReason(closed);
      if (code !== DisconnectReason.loggedOut) {
        throw new Error(`closed with ${code} (${message}), expected 401 (DisconnectReason.loggedOut)`);
      }
      const after = await control('GET', '/accounts');
      if (Array.isArray(after.json) && after.json.some((a) => a.jid === account.jid)) {
        throw new Error(`GET /accounts still lists ${account.jid} after the unlink`);
      }
    },
  ],
  [
    'pair-code-link',
    async () => {
      const device = await Device.create('code');
      try {
        const phone = await unusedPhone();
        const client = await link(device, async (first) => {
          const code = await first.sock.requestPairingCode(phone);
          // Baileys sends companion_hello without waiting for its answer; until the sandbox has
          // read it, the phone finds no pending code (404).
          for (let attempt = 0; ; attempt++) {
            const { status, json } = await control('POST', '/phone/pair-code', { phone, code });
            if (status === 200) {
              return;
            }
            if (status !== 404 || attempt >= 20) {
              throw new Error(`POST /phone/pair-code answered ${status}: ${JSON.stringify(json)}`);
            }
            await sleep(100);
          }
        });
        const account = await accountOf(client);
        if (account.phone !== phone) {
          throw new Error(`linked to ${account.phone}, not ${phone}`);
        }
      } finally {
        await device.remove();
      }
    },
  ],
];

// ---- running them -------------------------------------------------------------------------------

const results = [];
for (const [name, run] of scenarios) {
  const startedAt = Date.now();
  current = name;
  started = [];
  let timer;
  try {
    await Promise.race([
      run(),
      new Promise((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`timed out after ${SCENARIO_TIMEOUT_MS / 1000} s`)),
          SCENARIO_TIMEOUT_MS,
        );
      }),
    ]);
    results.push(`ok ${name} ${Date.now() - startedAt}`);
  } catch (error) {
    results.push(`FAIL ${name}: ${error?.message ?? error}`);
  } finally {
    clearTimeout(timer);
    for (const client of started) {
      if (client !== state.live) {
        client.end();
      }
    }
  }
}
state.live?.end();
// Let the last sockets close and their warnings arrive before reporting.
await sleep(300);
await state.device?.remove();

for (const line of results) {
  console.log(line);
}
for (const { text, difference } of captured) {
  console.log(`${difference ? '!' : ' '} ${text}`);
}
const failed = results.filter((r) => r.startsWith('FAIL')).length;
const differences = captured.filter((c) => c.difference).length;
console.log(
  failed || differences
    ? `FAILED: ${failed} scenario(s) failed, ${differences} log line(s) show a sandbox difference (marked !)`
    : `passed: ${results.length} scenarios, no sandbox differences in ${captured.length} warn/error line(s)`,
);
process.exit(failed || differences ? 1 : 0);
