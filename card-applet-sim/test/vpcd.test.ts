/**
 * The vpcd client against a stand-in for pcscd's vpcd driver: a TCP server
 * speaking the same framing (uint16 BE length + payload). The real pcscd is
 * in pcscd.test.ts; here every control code, the reconnection and the fault
 * paths are driven precisely.
 */
import test from 'ava';
import { createServer } from 'node:net';
import type { Server, Socket } from 'node:net';
import { ATR, MemoryStorage } from '@dt/firmware';
import { INS, SW, decodeResponse, encodeCommand, selectCommand } from '@dt/protocol';
import { SimulatedCard, VpcdClient, VPCD_CONTROL } from '../src/index.ts';
import { readyCard, request } from './helpers.ts';

/** One accepted connection of the fake driver, with request/response helpers. */
class DriverConnection {
  readonly socket: Socket;
  #buffer = Buffer.alloc(0);
  #waiters: ((m: Uint8Array) => void)[] = [];
  #messages: Uint8Array[] = [];
  closed: Promise<void>;

  constructor(socket: Socket) {
    this.socket = socket;
    this.closed = new Promise((r) => socket.once('close', () => r()));
    socket.on('data', (c) => {
      this.#buffer = Buffer.concat([this.#buffer, c]);
      while (this.#buffer.length >= 2 && this.#buffer.length >= 2 + this.#buffer.readUInt16BE(0)) {
        const n = this.#buffer.readUInt16BE(0);
        const m = new Uint8Array(this.#buffer.subarray(2, 2 + n));
        this.#buffer = this.#buffer.subarray(2 + n);
        const w = this.#waiters.shift();
        if (w) w(m);
        else this.#messages.push(m);
      }
    });
  }

  send(payload: Uint8Array | number[]): void {
    const p = Buffer.from(payload as Uint8Array);
    const h = Buffer.alloc(2);
    h.writeUInt16BE(p.length);
    this.socket.write(Buffer.concat([h, p]));
  }

  next(timeoutMs = 10_000): Promise<Uint8Array> {
    const m = this.#messages.shift();
    if (m) return Promise.resolve(m);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no reply from the card')), timeoutMs);
      this.#waiters.push((msg) => {
        clearTimeout(timer);
        resolve(msg);
      });
    });
  }

  async apdu(bytes: Uint8Array): Promise<Uint8Array> {
    this.send(bytes);
    return this.next();
  }
}

/** A fake vpcd driver listening on a free port. */
async function fakeDriver(): Promise<{ server: Server; port: number; connection: () => Promise<DriverConnection> }> {
  const pending: DriverConnection[] = [];
  const waiters: ((c: DriverConnection) => void)[] = [];
  const server = createServer((s) => {
    const c = new DriverConnection(s);
    const w = waiters.shift();
    if (w) w(c);
    else pending.push(c);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const addr = server.address();
  const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
  return {
    server,
    port,
    connection: () => {
      const c = pending.shift();
      if (c) return Promise.resolve(c);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('the card did not connect')), 5000);
        waiters.push((conn) => {
          clearTimeout(timer);
          resolve(conn);
        });
      });
    },
  };
}

const sw = (r: Uint8Array): number => decodeResponse(r).sw;
const GET_STATUS = encodeCommand({ cla: 0x80, ins: INS.GET_STATUS, p1: 0, p2: 0, le: 256 });

test('vpcd: ATR poll, power on, APDUs; power off and reset clear the volatile state', async (t) => {
  const driver = await fakeDriver();
  const card = new SimulatedCard({ storage: new MemoryStorage() });
  const client = new VpcdClient(card, { port: driver.port });
  t.teardown(async () => {
    await client.stop();
    driver.server.close();
  });
  client.start();
  const conn = await driver.connection();
  conn.send([VPCD_CONTROL.GET_ATR]);
  t.deepEqual(await conn.next(), ATR);
  conn.send([VPCD_CONTROL.POWER_ON]);
  t.is(sw(await conn.apdu(encodeCommand(selectCommand()))), SW.OK);
  t.is(sw(await conn.apdu(GET_STATUS)), SW.OK, 'selected');
  conn.send([VPCD_CONTROL.POWER_OFF]);
  conn.send([VPCD_CONTROL.GET_ATR]);
  t.deepEqual(await conn.next(), ATR, 'the ATR is answered at any time, powered or not');
  conn.send([VPCD_CONTROL.POWER_ON]);
  t.is(sw(await conn.apdu(GET_STATUS)), SW.COMMAND_NOT_ALLOWED, 'power off dropped the selection');
  t.is(sw(await conn.apdu(encodeCommand(selectCommand()))), SW.OK);
  conn.send([VPCD_CONTROL.RESET]);
  t.is(sw(await conn.apdu(GET_STATUS)), SW.COMMAND_NOT_ALLOWED, 'reset dropped the selection');
  // Unknown control codes are ignored; the connection keeps working.
  conn.send([0x7f]);
  t.is(sw(await conn.apdu(encodeCommand(selectCommand()))), SW.OK);
  await client.stop();
  await conn.closed;
});

test('vpcd: reconnects when the driver goes away (pcscd restart) and comes back', async (t) => {
  const driver = await fakeDriver();
  const card = new SimulatedCard({ storage: new MemoryStorage() });
  const client = new VpcdClient(card, { port: driver.port, reconnectMs: 50 });
  t.teardown(async () => {
    await client.stop();
    driver.server.close();
  });
  client.start();
  const first = await driver.connection();
  first.send([VPCD_CONTROL.POWER_ON]);
  t.is(sw(await first.apdu(encodeCommand(selectCommand()))), SW.OK);
  first.socket.destroy();
  const second = await driver.connection();
  const deadline = Date.now() + 3000;
  while (client.connections < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  t.is(client.connections, 2);
  second.send([VPCD_CONTROL.POWER_ON]);
  t.is(sw(await second.apdu(GET_STATUS)), SW.COMMAND_NOT_ALLOWED, 'a fresh card session');
});

test('vpcd: a power cut or a dropped R-APDU takes the card out of the reader; it comes back powered down', async (t) => {
  const driver = await fakeDriver();
  const { card } = await readyCard();
  card.powerOff();
  const client = new VpcdClient(card, { port: driver.port, reinsertDelayMs: 50 });
  const faults: string[] = [];
  client.on('fault', (d) => faults.push(d));
  t.teardown(async () => {
    await client.stop();
    driver.server.close();
  });
  client.start();
  let conn = await driver.connection();
  conn.send([VPCD_CONTROL.POWER_ON]);
  t.is(sw(await conn.apdu(encodeCommand(selectCommand()))), SW.OK);
  const before = decodeResponse(await conn.apdu(GET_STATUS));
  t.is(before.sw, SW.OK);

  card.faults.arm({ dropFrame: 1 });
  conn.send(GET_STATUS);
  await conn.closed;
  t.regex(faults[0]!, /dropped/);
  conn = await driver.connection();
  conn.send([VPCD_CONTROL.POWER_ON]);
  t.is(sw(await conn.apdu(encodeCommand(selectCommand()))), SW.OK);

  // Cut the power during PAY's commit: no answer, the card leaves the field.
  card.faults.arm({ cutAtWrite: 1 });
  const req = request(1_500).bytes;
  const blocks: Uint8Array[] = [];
  for (let o = 0; o < req.length; o += 255) {
    const last = o + 255 >= req.length;
    blocks.push(
      encodeCommand({ cla: last ? 0x80 : 0x90, ins: INS.PAY, p1: 0, p2: 0, data: req.subarray(o, o + 255), ...(last ? { le: 256 } : {}) }),
    );
  }
  for (const b of blocks.slice(0, -1)) t.is(sw(await conn.apdu(b)), SW.OK);
  conn.send(blocks.at(-1)!);
  await conn.closed;
  t.regex(faults[1]!, /power cut: write 1/);
  conn = await driver.connection();
  conn.send([VPCD_CONTROL.POWER_ON]);
  t.is(sw(await conn.apdu(encodeCommand(selectCommand()))), SW.OK);
  const after = decodeResponse(await conn.apdu(GET_STATUS));
  t.deepEqual(after.data, before.data, 'the cut PAY left the committed state untouched');
});
