/**
 * The `dt-card` CLI, run as a separate process exactly as a user runs it
 * (bin/dt-card.js): create, personalize (dev PKI and ledger PKI files),
 * show, clone, and its errors.
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { JOURNAL_SLOTS, MemoryStorage, ShadowJournal, decodeState } from '@dt/firmware';
import {
  Role,
  bytesEqual,
  decodeMessage,
  openSigned,
  toHex,
  verifyChain,
  verifyCoseSign1,
  verifyRoot,
  getCertificates,
  pay,
  selectApplet,
  verifyPin,
} from '@dt/protocol';
import type { OpenedMessage } from '@dt/protocol';
import {
  FileStorage,
  InProcessTransport,
  CardControlError,
  SimulatedCard,
  connectCardControl,
  createDevPki,
  devPaymentRequest,
  issueDevTerminal,
  loadDevPki,
  readStateFile,
  systemClock,
} from '../src/index.ts';
import { tempDir } from './helpers.ts';

const BIN = join(fileURLToPath(new URL('.', import.meta.url)), '..', 'bin', 'dt-card.js');

function dtCard(
  args: string[],
  cwd: string,
  io: { stdin?: string; env?: NodeJS.ProcessEnv } = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, ...args], {
      cwd,
      env: { ...process.env, ...io.env },
      stdio: [io.stdin === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    });
    if (io.stdin !== undefined) child.stdin!.end(io.stdin);
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString('utf8')));
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** The secret key inside a card file, read through the firmware's journal (for the never-printed check). */
function secretOf(file: string): Uint8Array {
  const loaded = new ShadowJournal(new MemoryStorage(readStateFile(file).slots)).load();
  if (loaded.kind !== 'state') throw new Error('no committed state');
  const sk = decodeState(loaded.body).secretKey;
  if (!sk) throw new Error('no key');
  return sk;
}

test('create, personalize with the dev PKI and --load, show (human and JSON) without ever printing the key', async (t) => {
  const dir = tempDir();
  const c = await dtCard(['create', 'alice.card', '--label', 'alice'], dir);
  t.is(c.code, 0, c.stderr);
  t.is(statSync(join(dir, 'alice.card')).mode & 0o777, 0o600);
  const p = await dtCard(
    [
      'personalize',
      'alice.card',
      '--pin',
      '2468',
      '--puk',
      '13572468',
      '--per-payment',
      '30000',
      '--cvm-limit',
      '10000',
      '--load',
      '20000,5000',
      '--json',
    ],
    dir,
  );
  t.is(p.code, 0, p.stderr);
  t.regex(p.stderr, /created a development PKI/);
  const pj = JSON.parse(p.stdout);
  t.deepEqual(pj.loaded, [20000, 5000]);

  const human = await dtCard(['show', 'alice.card'], dir);
  t.is(human.code, 0, human.stderr);
  t.regex(human.stdout, /label +alice/);
  t.regex(human.stdout, /counter +1\n/);
  t.regex(human.stdout, /balance +250\.00 KZT in 2 coin\(s\)/);
  t.regex(human.stdout, /offline +0\.00 KZT in 0 payment\(s\) since the last sync/);
  t.regex(human.stdout, /per payment 300\.00 KZT, .* CVM above 100\.00 KZT/);
  t.regex(human.stdout, /PIN tries +3 left/);
  t.regex(human.stdout, /trusted time +\d+ \(\d{4}-\d\d-\d\dT.*\); PAY refused for requests after \d{4}-/);
  const json = JSON.parse((await dtCard(['show', 'alice.card', '--json'], dir)).stdout);
  t.is(json.balance, 25_000);
  // Personalization and the load receipt are the only times the card has seen (SPEC §10.8):
  // both raised the floor and the trusted time alike; no payment has moved the floor yet.
  t.true(Number.isSafeInteger(json.trustedTime) && json.trustedTime <= Math.floor(Date.now() / 1000) + 1);
  t.is(json.trustedTime, json.clockFloor);
  t.is(json.card, pj.card);
  t.deepEqual(json.personalized, ['key', 'certificates', 'PIN', 'config']);
  const secret = toHex(secretOf(join(dir, 'alice.card')));
  for (const out of [human.stdout, JSON.stringify(json), p.stdout, p.stderr]) {
    t.false(out.toLowerCase().includes(secret), 'the secret key is never printed');
    t.false(out.includes('2468') || out.includes('13572468'), 'nor the PIN or PUK');
  }
});

test('clone prints the attack-tool warning and makes a card that signs with the same key and counter: a double spend', async (t) => {
  const dir = tempDir();
  t.is((await dtCard(['create', 'a.card'], dir)).code, 0);
  t.is((await dtCard(['personalize', 'a.card', '--pin', '1234', '--puk', '12345678', '--load', '10000'], dir)).code, 0);
  const c = await dtCard(['clone', 'a.card', 'b.card'], dir);
  t.is(c.code, 0, c.stderr);
  t.true(c.stderr.includes('ATTACK TOOL: a clone double-spends and gets the card revoked'));
  t.regex((await dtCard(['show', 'b.card'], dir)).stdout, /CLONE of .*a\.card/);

  const pki = loadDevPki(join(dir, 'dev-pki'));
  const terminal = issueDevTerminal(pki);
  const root = verifyRoot(pki.issuer.cert, systemClock());
  const transfers: OpenedMessage<'Transfer'>[] = [];
  for (const name of ['a.card', 'b.card']) {
    const storage = FileStorage.open(join(dir, name));
    const transport = new InProcessTransport(new SimulatedCard({ storage }));
    await selectApplet(transport);
    const chain = await getCertificates(transport);
    const handover = await pay(transport, devPaymentRequest(terminal, 7_000).bytes);
    storage.close();
    const transfer = openSigned('Transfer', decodeMessage('Handover', handover).transfer);
    // Each transfer verifies under the key its card's certificate names.
    const [leaf] = verifyChain(chain, { root, at: systemClock(), leafRole: Role.CARD });
    t.notThrows(() => verifyCoseSign1(transfer.cose, leaf!.publicKey));
    transfers.push(transfer);
  }
  const [a, b] = transfers as [OpenedMessage<'Transfer'>, OpenedMessage<'Transfer'>];
  t.deepEqual(a.message.card, b.message.card, 'same card key');
  t.is(a.message.counter, b.message.counter, 'same counter');
  t.deepEqual(a.message.inputs, b.message.inputs, 'the same token spent twice');
  t.notDeepEqual(a.message.nonce, b.message.nonce, 'two different transfers');
  t.deepEqual(a.cose.kid, b.cose.kid, 'signed with the same key');
});

test('personalize from the ledger PKI layout (--ledger-data): the card chain verifies to that root', async (t) => {
  const dir = tempDir();
  const pki = createDevPki();
  const data = join(dir, 'ledger-data');
  mkdirSync(join(data, 'banks'), { recursive: true });
  const keyJson = (sk: Uint8Array, pk: Uint8Array) => JSON.stringify({ alg: 'ES256', secretKey: toHex(sk), publicKey: toHex(pk) }) + '\n';
  writeFileSync(join(data, 'root.cert'), pki.issuer.cert);
  writeFileSync(join(data, 'ledger.cert'), pki.ledger.cert);
  writeFileSync(join(data, 'banks', 'kaspi.key.json'), keyJson(pki.bank.keys.secretKey, pki.bank.keys.publicKey), { mode: 0o600 });
  writeFileSync(join(data, 'banks', 'kaspi.cert'), pki.bank.cert);
  t.is((await dtCard(['create', 'c.card'], dir)).code, 0);
  const p = await dtCard(
    ['personalize', 'c.card', '--ledger-data', data, '--bank', 'kaspi', '--pin', '1234', '--puk', '12345678', '--subject', 'holder-42'],
    dir,
  );
  t.is(p.code, 0, p.stderr);
  t.notRegex(p.stderr, /development PKI/);
  const storage = FileStorage.open(join(dir, 'c.card'));
  const tr = new InProcessTransport(new SimulatedCard({ storage }));
  await selectApplet(tr);
  const chain = await getCertificates(tr);
  storage.close();
  const root = verifyRoot(pki.issuer.cert, systemClock());
  const [card, bank] = verifyChain(chain, { root, at: systemClock(), leafRole: Role.CARD });
  t.is(card!.claims.sub, 'holder-42');
  t.true(bytesEqual(bank!.kid, pki.bank.signer.kid));
  t.true(bytesEqual(openSigned('Certificate', chain[1]!).message.cnf.coseKey.kid, pki.bank.signer.kid));
});

test('personalize takes the PIN and PUK from stdin or the environment, never needing them on the command line; the card holds that PIN', async (t) => {
  const dir = tempDir();
  for (const f of ['s.card', 'e.card', 'n.card']) t.is((await dtCard(['create', f], dir)).code, 0);
  const viaStdin = await dtCard(['personalize', 's.card', '--pin-stdin', '--json'], dir, { stdin: '4321\n87654321\n' });
  t.is(viaStdin.code, 0, viaStdin.stderr);
  const viaEnv = await dtCard(['personalize', 'e.card', '--pin-env', 'MY_PIN', '--puk-env', 'MY_PUK'], dir, {
    env: { MY_PIN: '975310', MY_PUK: '1122334455' },
  });
  t.is(viaEnv.code, 0, viaEnv.stderr);
  for (const r of [viaStdin, viaEnv])
    for (const secret of ['4321', '87654321', '975310', '1122334455']) t.false((r.stdout + r.stderr).includes(secret));
  // The card checks exactly the PIN given that way: the right one verifies, another is refused (63Cx).
  for (const [file, pin] of [
    ['s.card', '4321'],
    ['e.card', '975310'],
  ] as const) {
    const storage = FileStorage.open(join(dir, file));
    const transport = new InProcessTransport(new SimulatedCard({ storage }));
    await selectApplet(transport);
    await t.throwsAsync(verifyPin(transport, '0000'));
    await t.notThrowsAsync(verifyPin(transport, pin));
    storage.close();
  }
  // No PIN at all, a missing variable, a short stdin, two ways at once: usage errors (2), the card untouched.
  const none = await dtCard(['personalize', 'n.card', '--puk', '12345678'], dir);
  t.is(none.code, 2);
  t.regex(none.stderr, /give the PIN: --pin-stdin \(recommended\) or --pin-env <NAME>/);
  const noVar = await dtCard(['personalize', 'n.card', '--pin-env', 'NO_SUCH_DT_VAR', '--puk', '12345678'], dir);
  t.is(noVar.code, 2);
  t.regex(noVar.stderr, /--pin-env NO_SUCH_DT_VAR: no such environment variable/);
  const short = await dtCard(['personalize', 'n.card', '--pin-stdin'], dir, { stdin: '1234\n' });
  t.is(short.code, 2);
  t.regex(short.stderr, /--pin-stdin: expected 2 line\(s\)/);
  const both = await dtCard(['personalize', 'n.card', '--pin-stdin', '--pin', '1234'], dir, { stdin: '1234\n12345678\n' });
  t.is(both.code, 2);
  t.regex(both.stderr, /--pin-stdin reads the PIN too/);
  t.regex((await dtCard(['show', 'n.card'], dir)).stdout, /personalized +blank \(open\)/);
});

test('errors and exit codes: existing file (5), bad PIN format (2), second personalization (6986: 1), serve without a transport (2), --torn without --cut-at-write (2), missing file (2), unknown option (2)', async (t) => {
  const dir = tempDir();
  t.is((await dtCard(['create', 'x.card'], dir)).code, 0);
  const again = await dtCard(['create', 'x.card'], dir);
  t.is(again.code, 5);
  t.regex(again.stderr, /already exists/);
  const badPin = await dtCard(['personalize', 'x.card', '--pin', '12', '--puk', '12345678'], dir);
  t.is(badPin.code, 2);
  t.regex(badPin.stderr, /the PIN must be 4\.\.12 digits/);
  t.is((await dtCard(['personalize', 'x.card', '--pin', '1234', '--puk', '12345678'], dir)).code, 0);
  const twice = await dtCard(['personalize', 'x.card', '--pin', '1234', '--puk', '12345678', '--dev-pki', 'other-pki'], dir);
  t.is(twice.code, 1);
  t.regex(twice.stderr, /x\.card is already personalized and locked \(the card would answer 6986\)/);
  t.false(existsSync(join(dir, 'other-pki')), 'refused before a development PKI is created for it');
  const serve = await dtCard(['serve', 'x.card'], dir);
  t.is(serve.code, 2);
  t.regex(serve.stderr, /exactly one of --vpcd or --serial/);
  // A fault plan spelled wrong on the command line is a usage error too.
  const torn = await dtCard(['serve', 'x.card', '--vpcd', '--torn'], dir);
  t.is(torn.code, 2);
  const missing = await dtCard(['show', 'nope.card'], dir);
  t.is(missing.code, 2);
  t.regex(missing.stderr, /no state file/);
  const bad = await dtCard(['show', 'x.card', '--frobnicate'], dir);
  t.is(bad.code, 2);
  t.regex(bad.stderr, /unknown option '--frobnicate'/);
  const help = await dtCard(['--help'], dir);
  t.is(help.code, 0);
  t.regex(help.stdout, /Exit codes:\n  0   success/);
});

test('show of a state file whose storage slots hold random bytes: exit 5 (state file invalid) and one line saying the card state is unreadable, no raw status word refusal (1), no stack trace', async (t) => {
  const dir = tempDir();
  t.is((await dtCard(['create', 'x.card'], dir)).code, 0);
  t.is((await dtCard(['personalize', 'x.card', '--pin', '1234', '--puk', '12345678', '--load', '500'], dir)).code, 0);
  // A well-formed state file (JSON, base64 slots) whose journal slots are noise: the applet finds no intact record.
  const file = join(dir, 'x.card');
  const json = JSON.parse(readFileSync(file, 'utf8')) as { slots: Record<string, string> };
  for (const slot of JOURNAL_SLOTS) json.slots[String(slot)] = randomBytes(300).toString('base64');
  writeFileSync(file, JSON.stringify(json));
  const before = readFileSync(file);
  for (const args of [
    ['show', 'x.card'],
    ['show', 'x.card', '--json'],
  ]) {
    const r = await dtCard(args, dir);
    t.is(r.code, 5, r.stderr);
    t.is(r.stdout, '');
    t.regex(r.stderr, /^dt-card: x\.card: the card's state is unreadable \([^\n]*\)\n$/);
    t.notRegex(r.stderr, /refused|\n\s+at /);
  }
  // personalize reads the card the same way first: the same answer, the file untouched.
  const p = await dtCard(['personalize', 'x.card', '--pin', '1234', '--puk', '12345678'], dir);
  t.is(p.code, 5, p.stderr);
  t.regex(p.stderr, /^dt-card: x\.card: the card's state is unreadable/);
  t.deepEqual(readFileSync(file), before);
});

/** A personalized, loaded card in `dir/<name>` whose journal slots then get noise: a well-formed state file (JSON, base64 slots) whose card state is unreadable. */
async function unreadableCard(dir: string, name: string): Promise<string> {
  if ((await dtCard(['create', name], dir)).code !== 0) throw new Error('create failed');
  if ((await dtCard(['personalize', name, '--pin', '1234', '--puk', '12345678', '--load', '500'], dir)).code !== 0)
    throw new Error('personalize failed');
  const file = join(dir, name);
  const json = JSON.parse(readFileSync(file, 'utf8')) as { slots: Record<string, string> };
  for (const slot of JOURNAL_SLOTS) json.slots[String(slot)] = randomBytes(300).toString('base64');
  writeFileSync(file, JSON.stringify(json));
  return file;
}

test("load of a state file whose card state is unreadable: exit 5 and the one line show prints, not the card's 6F00 refusal (1); the file untouched, no stack trace", async (t) => {
  const dir = tempDir();
  const file = await unreadableCard(dir, 'x.card');
  const before = readFileSync(file);
  for (const args of [
    ['load', 'x.card', '5000'],
    ['load', 'x.card', '5000', '--json'],
  ]) {
    const r = await dtCard(args, dir);
    t.is(r.code, 5, r.stderr);
    t.is(r.stdout, '');
    t.is(r.stderr, "dt-card: x.card: the card's state is unreadable (its storage holds no intact record; the card answers 6F00)\n");
  }
  t.deepEqual(readFileSync(file), before);
  t.false(existsSync(join(dir, 'x.card.lock')), 'the lock is released');
});

/**
 * Starts `dt-card serve <args>` in `dir` (vpcd port 1: nobody listens, it keeps retrying), waits until `ready(stdout, stderr)`,
 * runs `during`, then stops it with SIGTERM and returns its output and exit code.
 */
async function serveUntil(
  args: string[],
  dir: string,
  ready: (stdout: string, stderr: string) => boolean,
  during: () => Promise<void> = async () => undefined,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [BIN, 'serve', ...args, '--vpcd', '--port', '1', '--json'], {
    cwd: dir,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString('utf8')));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  try {
    const deadline = Date.now() + 20_000;
    while (!ready(stdout, stderr)) {
      if (Date.now() > deadline || child.exitCode !== null) throw new Error(`serve never got ready:\n${stdout}\n${stderr}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    await during();
  } finally {
    child.kill('SIGTERM');
  }
  return { code: await exited, stdout, stderr };
}

test('serve of a state file whose card state is unreadable still serves (a lab may serve a damaged card) but warns once on stderr at start that it will answer 6F00, and its control channel status says the state is unreadable; a readable card gets no warning', async (t) => {
  const dir = tempDir();
  await unreadableCard(dir, 'x.card');
  // Its control channel's status says so too (the served process, not an in-process server).
  const socket = join(dir, 'c.sock');
  const bad = await serveUntil(
    ['x.card', '--control', socket],
    dir,
    (out, err) => out.includes('"event":"serving"') && err.includes('\n'),
    async () => {
      const c = await connectCardControl(socket);
      try {
        const e = await t.throwsAsync(c.status(), { instanceOf: CardControlError });
        t.is(e.code, 'CARD_UNREADABLE');
        t.regex(
          e.message,
          /^card control status: the card's state is unreadable \(its storage holds no intact record; the card answers 6F00\)$/,
        );
      } finally {
        await c.close();
      }
    },
  );
  t.is(bad.code, 0, bad.stderr);
  t.is(
    bad.stderr,
    "dt-card: warning: x.card: the card's state is unreadable (its storage holds no intact record; the card answers 6F00): serving it anyway, it answers 6F00 to every command\n",
  );
  t.regex(bad.stdout, /"event":"control-request","command":"status","ok":true/);
  t.regex(bad.stdout, /"event":"stopped"/);
  t.false(existsSync(join(dir, 'x.card.lock')), 'the lock is released');
  t.is((await dtCard(['create', 'good.card'], dir)).code, 0);
  const good = await serveUntil(['good.card'], dir, (out) => out.includes('"event":"serving"'));
  t.is(good.code, 0, good.stderr);
  t.is(good.stderr, '');
});

test('load refuses a card with offline payments before it touches it (issue 14 point 4): exit 1, state file byte for byte unchanged, the card still pays', async (t) => {
  const dir = tempDir();
  t.is((await dtCard(['create', 'a.card'], dir)).code, 0);
  t.is((await dtCard(['personalize', 'a.card', '--pin', '1234', '--puk', '12345678', '--load', '10000'], dir)).code, 0);
  const pki = loadDevPki(join(dir, 'dev-pki'));
  const terminal = issueDevTerminal(pki);
  const pay1 = async (): Promise<void> => {
    const storage = FileStorage.open(join(dir, 'a.card'));
    try {
      const transport = new InProcessTransport(new SimulatedCard({ storage }));
      await selectApplet(transport);
      await pay(transport, devPaymentRequest(terminal, 1_000).bytes);
    } finally {
      storage.close();
    }
  };
  await pay1();
  const before = readFileSync(join(dir, 'a.card'));
  const r = await dtCard(['load', 'a.card', '5000'], dir);
  t.is(r.code, 1, r.stderr);
  t.regex(r.stderr, /offline payments since its last sync/);
  t.deepEqual(readFileSync(join(dir, 'a.card')), before, 'the refused load wrote nothing to the card');
  const shown = JSON.parse((await dtCard(['show', 'a.card', '--json'], dir)).stdout) as { syncPending: boolean; balance: number };
  t.false(shown.syncPending);
  t.is(shown.balance, 9_000);
  await t.notThrowsAsync(pay1(), 'the card still pays (no sync left pending)');
});

test('serve --exit-with-parent: a simulator whose parent was killed (no SIGTERM) stops by itself and says why', async (t) => {
  const dir = tempDir();
  t.is((await dtCard(['create', 'x.card'], dir)).code, 0);
  const logFile = join(dir, 'serve.log');
  // A parent that starts the simulator (its output to a file, as a supervisor would) and then is SIGKILLed.
  const parent = spawn(
    process.execPath,
    [
      '-e',
      `const { spawn } = require('node:child_process'); const fs = require('node:fs');
       const out = fs.openSync(${JSON.stringify(logFile)}, 'w');
       const c = spawn(process.execPath, [${JSON.stringify(BIN)}, 'serve', 'x.card', '--vpcd', '--port', '1', '--json', '--exit-with-parent'],
         { cwd: ${JSON.stringify(dir)}, stdio: ['ignore', out, out] });
       process.stdout.write(String(c.pid) + '\\n'); setInterval(() => {}, 1000);`,
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const pid = await new Promise<number>((resolve) => parent.stdout!.once('data', (d: Buffer) => resolve(Number(d.toString().trim()))));
  // Wait until it serves (it keeps retrying the unreachable vpcd port), then kill the parent without a signal it could pass on.
  const alive = (): boolean => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  };
  for (let i = 0; i < 300 && !readFileSync(logFile, 'utf8').includes('"event":"serving"'); i++) await new Promise((r) => setTimeout(r, 50));
  t.true(alive());
  parent.kill('SIGKILL');
  for (let i = 0; i < 300 && alive(); i++) await new Promise((r) => setTimeout(r, 50));
  const gone = !alive();
  if (!gone) process.kill(pid, 'SIGKILL');
  t.true(gone, 'the simulator stopped after its parent died');
  const log = readFileSync(logFile, 'utf8');
  t.regex(log, /"event":"parent-exited"/);
  t.regex(log, /"event":"stopped"/);
});

test('personalize --offline-count above the protocol maximum (64), a --subject empty or over 64 bytes, or limits that make no usable card (a zero limit, a per-payment limit above the offline total), is a usage error (2) refused before the card is touched', async (t) => {
  const dir = tempDir();
  t.is((await dtCard(['create', 'x.card'], dir)).code, 0);
  const before = readFileSync(join(dir, 'x.card'));
  const r = await dtCard(['personalize', 'x.card', '--pin', '1234', '--puk', '12345678', '--offline-count', '65'], dir);
  t.is(r.code, 2, r.stderr);
  t.regex(r.stderr, /--offline-count must be an integer 1\.\.64/);
  t.deepEqual(readFileSync(join(dir, 'x.card')), before, 'no key generated on the card');
  for (const [subject, n] of [
    ['', 0],
    ['x'.repeat(65), 65],
  ] as const) {
    const s = await dtCard(['personalize', 'x.card', '--pin', '1234', '--puk', '12345678', '--subject', subject], dir);
    t.is(s.code, 2, s.stderr);
    t.regex(s.stderr, new RegExp(`--subject must be 1 to 64 bytes of text \\(got ${n}\\)`));
    t.deepEqual(readFileSync(join(dir, 'x.card')), before, 'no key generated on the card');
  }
  for (const [limit, why] of [
    [['--per-payment', '0'], /per-payment limit must be at least 0\.01 KZT/],
    [['--offline-total', '0'], /offline total limit must be at least 0\.01 KZT/],
    [
      ['--per-payment', '50000', '--offline-total', '40000'],
      /per-payment limit \(500\.00 KZT\) is above the offline total limit \(400\.00 KZT\)/,
    ],
  ] as const) {
    const l = await dtCard(['personalize', 'x.card', '--pin', '1234', '--puk', '12345678', ...limit], dir);
    t.is(l.code, 2, l.stderr);
    t.regex(l.stderr, why);
    t.deepEqual(readFileSync(join(dir, 'x.card')), before, 'no key generated on the card');
  }
  t.false(existsSync(join(dir, 'dev-pki')), 'no development PKI created for it');
});

test('paths that name no usable file are usage errors (2) with a clear message: create in a missing directory, show of a directory, an unusable --dev-pki, a --serial that is no tty, a --control socket in a missing directory, a vpcd slot or port out of range', async (t) => {
  const dir = tempDir();
  t.is((await dtCard(['create', 'x.card'], dir)).code, 0);
  const noDir = await dtCard(['create', 'no/such/x.card'], dir);
  t.is(noDir.code, 2, noDir.stderr);
  t.regex(noDir.stderr, /^dt-card: cannot create no\/such\/x\.card: no such directory\n$/);
  const cloneNoDir = await dtCard(['clone', 'x.card', 'no/such/y.card'], dir);
  t.is(cloneNoDir.code, 2, cloneNoDir.stderr);
  t.regex(cloneNoDir.stderr, /cannot create no\/such\/y\.card: no such directory/);
  mkdirSync(join(dir, 'adir'));
  const showDir = await dtCard(['show', 'adir'], dir);
  t.is(showDir.code, 2, showDir.stderr);
  t.regex(showDir.stderr, /^dt-card: no state file at adir: it is a directory\n$/);
  writeFileSync(join(dir, 'plain'), 'not a directory');
  const pkiFile = await dtCard(['personalize', 'x.card', '--pin', '1234', '--puk', '12345678', '--dev-pki', 'plain'], dir);
  t.is(pkiFile.code, 2, pkiFile.stderr);
  t.regex(pkiFile.stderr, /--dev-pki plain: not a usable development PKI \(not a directory\)/);
  mkdirSync(join(dir, 'badpki'));
  writeFileSync(join(dir, 'badpki', 'dev-pki.json'), 'junk');
  const pkiJunk = await dtCard(['personalize', 'x.card', '--pin', '1234', '--puk', '12345678', '--dev-pki', 'badpki'], dir);
  t.is(pkiJunk.code, 2, pkiJunk.stderr);
  t.regex(pkiJunk.stderr, /--dev-pki badpki: not a usable development PKI/);
  const noTty = await dtCard(['serve', 'x.card', '--serial', 'no/such/tty'], dir);
  t.is(noTty.code, 2, noTty.stderr);
  t.regex(noTty.stderr, /--serial no\/such\/tty: no such device/);
  const plainTty = await dtCard(['serve', 'x.card', '--serial', 'plain'], dir);
  t.is(plainTty.code, 2, plainTty.stderr);
  t.regex(plainTty.stderr, /--serial plain: not a terminal device/);
  const noSockDir = await dtCard(['serve', 'x.card', '--vpcd', '--control', 'no/such/x.sock'], dir);
  t.is(noSockDir.code, 2, noSockDir.stderr);
  t.regex(noSockDir.stderr, /--control no\/such\/x\.sock: no such directory for the socket/);
  const slot = await dtCard(['serve', 'x.card', '--vpcd', '--slot', '16'], dir);
  t.is(slot.code, 2, slot.stderr);
  t.regex(slot.stderr, /--slot must be an integer 0\.\.15/);
  const port = await dtCard(['serve', 'x.card', '--vpcd', '--port', '65535', '--slot', '1'], dir);
  t.is(port.code, 2, port.stderr);
  t.regex(port.stderr, /--port 65535 \+ --slot 1 is not a TCP port \(at most 65535\)/);
  t.false(existsSync(join(dir, 'x.card.lock')), 'the refused serves released the card');
  const show = await dtCard(['show', 'x.card', '--json'], dir);
  t.is(show.code, 0, show.stderr);
  t.deepEqual(JSON.parse(show.stdout).personalized, [], 'every refusal left the card blank');
});

test('load refuses a card another PKI issued before LOAD BEGIN: exit 1, state file byte for byte unchanged, no sync left pending', async (t) => {
  const dir = tempDir();
  // Two development PKIs: the card is issued under the first, the load is signed by the second's ledger key.
  t.is((await dtCard(['create', 'x.card'], dir)).code, 0);
  const p = await dtCard(['personalize', 'x.card', '--pin', '1234', '--puk', '12345678', '--dev-pki', 'issuer-pki', '--load', '500'], dir);
  t.is(p.code, 0, p.stderr);
  t.is((await dtCard(['create', 'y.card'], dir)).code, 0);
  t.is((await dtCard(['personalize', 'y.card', '--pin', '1234', '--puk', '12345678', '--dev-pki', 'other-pki'], dir)).code, 0);
  const before = readFileSync(join(dir, 'x.card'));
  const r = await dtCard(['load', 'x.card', '100', '--dev-pki', 'other-pki'], dir);
  t.is(r.code, 1, r.stderr);
  t.regex(r.stderr, /the card was not issued by this development PKI/);
  t.deepEqual(readFileSync(join(dir, 'x.card')), before);
  const show = JSON.parse((await dtCard(['show', 'x.card', '--json'], dir)).stdout) as { syncPending: boolean; balance: number };
  t.false(show.syncPending);
  t.is(show.balance, 500);
  t.is((await dtCard(['load', 'x.card', '100', '--dev-pki', 'issuer-pki'], dir)).code, 0, 'its own dev PKI still loads it');
});
