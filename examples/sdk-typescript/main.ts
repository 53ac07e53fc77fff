// The whole wagate login flow through the generated TypeScript client, against a sandbox gateway.
//
// Links one device by QR code and one by pairing code, follows both through the API and through
// signed webhooks (verified with the official `standardwebhooks` package), reads the delivery
// log, then logs out and cleans up. Prints one line per step and `sdk example: ok` at the end;
// exits non-zero with the reason on the first failure. Every wait is bounded.
//
// Environment: WAGATE_URL (e.g. http://127.0.0.1:3000), WAGATE_USER, WAGATE_PASSWORD.

import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

import { Webhook, WebhookVerificationError } from 'standardwebhooks';

// The client is generated, never installed: see openapi/sdks/generate.sh.
import { client } from '../../openapi/sdks/generated/typescript/client.gen.js';
import {
  createDevice,
  createWebhook,
  deleteDevice,
  deleteWebhook,
  getDevice,
  getDeviceStatus,
  listDevices,
  listWebhookDeliveries,
  loginDevice,
  loginDeviceWithCode,
  logoutDevice,
  type WebhookEvent,
  type WebhookEventType,
} from '../../openapi/sdks/generated/typescript/index.js';

/** Bound on every wait: a sandbox login takes a second or two, so a minute means it is stuck. */
const WAIT_MS = 60_000;
const PHONE = '628912344551';
const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
const EVENTS: WebhookEventType[] = [
  'logged_in',
  'qr_refreshed',
  'state_changed',
  'pair_code_issued',
  'logged_out',
];

/** A step did not go as it should; the message says which and why. */
class Failure extends Error {}

const step = (message: string): void => console.log(message);
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Calls `check` until it returns something other than undefined, for at most WAIT_MS. */
async function waitUntil<T>(
  what: string,
  check: () => Promise<T | undefined> | T | undefined,
): Promise<T> {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const found = await check();
    if (found !== undefined) return found;
    if (Date.now() > deadline) {
      throw new Failure(`timed out after ${WAIT_MS / 1000} s waiting for ${what}`);
    }
    await sleep(200);
  }
}

/** What every generated operation resolves to (with the client's default `throwOnError: false`). */
type Answer<T> = { data?: { results: T }; error?: unknown; response: Response };

/** The `results` of a successful answer; anything else is a Failure naming the call. */
async function results<T>(what: string, pending: Promise<Answer<T>>): Promise<T> {
  const { data, error, response } = await pending;
  if (response.status !== 200 || error !== undefined || data === undefined) {
    throw new Failure(`${what}: HTTP ${response.status}: ${JSON.stringify(error)}`);
  }
  return data.results;
}

/** A webhook endpoint on 127.0.0.1 that keeps every event whose signature verifies. */
class Receiver {
  readonly events: WebhookEvent[] = [];
  readonly rejected: string[] = [];
  private verifier: Webhook | undefined;
  private readonly server: Server;

  private constructor(server: Server) {
    this.server = server;
  }

  static async start(): Promise<Receiver> {
    const receiver = new Receiver(createServer());
    receiver.server.on('request', (request: IncomingMessage, response) => {
      void receiver.accept(request).then((status) => response.writeHead(status).end());
    });
    await new Promise<void>((resolve) => receiver.server.listen(0, '127.0.0.1', resolve));
    return receiver;
  }

  get url(): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/webhook`;
  }

  useSecret(secret: string): void {
    this.verifier = new Webhook(secret);
  }

  private async accept(request: IncomingMessage): Promise<number> {
    const chunks: Buffer[] = [];
    for await (const chunk of request) chunks.push(chunk as Buffer);
    const body = Buffer.concat(chunks).toString('utf8');
    const headers: Record<string, string> = {};
    for (const [name, value] of Object.entries(request.headers)) {
      if (typeof value === 'string') headers[name] = value;
    }
    // The secret comes with the create-webhook answer; nothing is sent before it exists, but a
    // delivery racing that answer waits for it rather than failing.
    const verifier = await waitUntil('the webhook secret', () => this.verifier).catch(
      () => undefined,
    );
    if (verifier === undefined) return 503;
    try {
      const event = verifier.verify(body, headers) as WebhookEvent;
      // At-least-once delivery: a retry carries the same webhook-id and is kept once.
      if (!this.events.some((seen) => seen.id === event.id)) this.events.push(event);
      return 204;
    } catch (error) {
      if (!(error instanceof WebhookVerificationError)) throw error;
      this.rejected.push(`${headers['webhook-id']}: ${error.message}`);
      return 400;
    }
  }

  /** The first verified event of `type` for `deviceId`, waiting at most WAIT_MS. */
  async waitFor<K extends WebhookEvent['type']>(
    type: K,
    deviceId: string,
  ): Promise<Extract<WebhookEvent, { type: K }>> {
    try {
      return await waitUntil(`a verified ${type} webhook for ${deviceId}`, () => {
        if (this.rejected.length > 0) {
          throw new Failure(`a webhook failed verification: ${this.rejected[0]}`);
        }
        return this.events.find(
          (event): event is Extract<WebhookEvent, { type: K }> =>
            event.type === type && event.device_id === deviceId,
        );
      });
    } catch (error) {
      const seen = this.events.map((event) => `${event.type}/${event.device_id}`).join(', ');
      throw new Failure(`${(error as Error).message}; received: ${seen || 'nothing'}`);
    }
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

/** Waits for the login both ways a consumer can see it: the API and the signed webhook. */
async function waitLoggedIn(receiver: Receiver, deviceId: string): Promise<void> {
  const path = { device_id: deviceId };
  await waitUntil(`${deviceId} to report is_logged_in`, async () => {
    const status = await results('getDeviceStatus', getDeviceStatus({ path }));
    return status.is_logged_in ? true : undefined;
  });
  const info = await results('getDevice', getDevice({ path }));
  if (info.state !== 'logged_in') {
    throw new Failure(`${deviceId} is logged in but its state is ${info.state}`);
  }
  step(`${deviceId}: status is_logged_in, state ${info.state}, jid ${info.jid}`);

  const event = await receiver.waitFor('logged_in', deviceId);
  step(`${deviceId}: verified logged_in webhook, seq ${event.seq}, jid ${event.data.jid}`);
}

/** The sandbox's phone endpoints are not in the spec: call them through the generated client's
 *  untyped request method, which already carries the base URL and the Basic credentials. */
async function sandboxPhone(
  deviceId: string,
  action: 'scan' | 'enter-code',
): Promise<{ jid: string }> {
  return results(
    `POST /sandbox/devices/${deviceId}/${action}`,
    client.post<{ 200: { results: { device_id: string; jid: string } } }>({
      url: `/sandbox/devices/{device_id}/${action}`,
      path: { device_id: deviceId },
      security: [{ scheme: 'basic', type: 'http' }],
    }),
  );
}

async function deliveredLogins(webhookId: string): Promise<Set<string>> {
  const page = await results(
    'listWebhookDeliveries',
    listWebhookDeliveries({ path: { id: webhookId }, query: { limit: 100 } }),
  );
  return new Set(
    page.deliveries
      .filter((delivery) => delivery.event_type === 'logged_in' && delivery.status === 'delivered')
      .map((delivery) => String(delivery.event.device_id)),
  );
}

async function run(receiver: Receiver): Promise<void> {
  step(`receiver: listening on ${receiver.url}`);

  const created = await results(
    'createWebhook',
    createWebhook({
      body: { url: receiver.url, events: EVENTS, description: 'sdk-typescript example' },
    }),
  );
  receiver.useSecret(created.secret);
  const webhookId = created.id;
  step(`webhook: created ${webhookId} for ${EVENTS.join(', ')}`);

  // Unique ids, so the example can run again against the same gateway.
  const suffix = randomUUID().slice(0, 8);
  const qrDevice = `sdk-typescript-qr-${suffix}`;
  const codeDevice = `sdk-typescript-code-${suffix}`;

  const device = await results(
    'createDevice',
    createDevice({ body: { device_id: qrDevice, display_name: 'QR login' } }),
  );
  step(`${device.id}: created, state ${device.state}`);

  const qr = await results('loginDevice', loginDevice({ path: { device_id: qrDevice } }));
  step(`${qrDevice}: QR code valid ${qr.qr_duration} s at ${qr.qr_link}`);
  // qr_link is public (no credentials) and unguessable, for showing to a person.
  const image = await fetch(qr.qr_link, { signal: AbortSignal.timeout(WAIT_MS) });
  const png = new Uint8Array(await image.arrayBuffer());
  if (image.status !== 200 || !PNG_SIGNATURE.every((byte, i) => png[i] === byte)) {
    throw new Failure(`GET ${qr.qr_link}: HTTP ${image.status}, not a PNG`);
  }
  step(`${qrDevice}: fetched the QR code, a ${png.length}-byte PNG`);

  const scanned = await sandboxPhone(qrDevice, 'scan');
  step(`${qrDevice}: the sandbox phone scanned it and linked ${scanned.jid}`);
  await waitLoggedIn(receiver, qrDevice);

  await results(
    'createDevice',
    createDevice({ body: { device_id: codeDevice, display_name: 'pairing code login' } }),
  );
  step(`${codeDevice}: created`);
  const code = await results(
    'loginDeviceWithCode',
    loginDeviceWithCode({ path: { device_id: codeDevice }, query: { phone: PHONE } }),
  );
  step(`${codeDevice}: pairing code ${code.pair_code} for ${PHONE}`);
  const entered = await sandboxPhone(codeDevice, 'enter-code');
  step(`${codeDevice}: the sandbox phone entered it and linked ${entered.jid}`);
  await waitLoggedIn(receiver, codeDevice);

  const devices = await results('listDevices', listDevices());
  for (const id of [qrDevice, codeDevice]) {
    const state = devices.find((listed) => listed.id === id)?.state;
    if (state !== 'logged_in') throw new Failure(`listDevices shows ${id} as ${state}`);
  }
  step(`devices: ${devices.length} listed, both new ones logged_in`);

  // The receiver answered 2xx, so the log marks both logins delivered (written in batches).
  await waitUntil('the delivery log to show both logged_in events delivered', async () => {
    const delivered = await deliveredLogins(webhookId);
    return delivered.has(qrDevice) && delivered.has(codeDevice) ? true : undefined;
  });
  step('webhook: the delivery log shows both logged_in events delivered');

  await results('logoutDevice', logoutDevice({ path: { device_id: qrDevice } }));
  const loggedOut = await receiver.waitFor('logged_out', qrDevice);
  step(`${qrDevice}: logged out (verified logged_out webhook: ${loggedOut.data.reason})`);

  for (const id of [qrDevice, codeDevice]) {
    await results('deleteDevice', deleteDevice({ path: { device_id: id } }));
    step(`${id}: deleted`);
  }
  await results('deleteWebhook', deleteWebhook({ path: { id: webhookId } }));
  step(`webhook: deleted ${webhookId}`);
}

async function main(): Promise<number> {
  const { WAGATE_URL, WAGATE_USER, WAGATE_PASSWORD } = process.env;
  if (!WAGATE_URL || !WAGATE_USER || !WAGATE_PASSWORD) {
    console.error('sdk example: FAILED: set WAGATE_URL, WAGATE_USER and WAGATE_PASSWORD');
    return 2;
  }
  // HTTP Basic is the spec's security scheme: the client encodes `user:password` itself.
  client.setConfig({
    baseUrl: WAGATE_URL.replace(/\/+$/, ''),
    auth: `${WAGATE_USER}:${WAGATE_PASSWORD}`,
  });

  const receiver = await Receiver.start();
  try {
    await run(receiver);
  } catch (error) {
    const reason = error instanceof Failure ? error.message : String(error);
    console.error(`sdk example: FAILED: ${reason}`);
    if (!(error instanceof Failure) && error instanceof Error) console.error(error.stack);
    return 1;
  } finally {
    await receiver.close();
  }
  console.log('sdk example: ok');
  return 0;
}

// Exit explicitly: idle keep-alive sockets of fetch would otherwise hold the process open.
process.exit(await main());
