/**
 * `dt-pos charge` and `dt-pos readers` over PC/SC, AS PROCESSES, through a
 * private pcscd (vpcd driver) with the simulated card served by
 * `dt-card serve --vpcd` (another process): the outcome is printed and the
 * process exits with its documented code, every time. nfc-pcsc used to keep
 * the process alive after its context was closed (a per-reader status thread
 * of @pokusew/pcsclite), so `charge` printed APPROVED and hung.
 *
 * Each child runs under a generous kill timer: a child that hangs is killed
 * with SIGKILL and the test fails on its signal, not on a measured duration.
 *
 * Needs root, pcscd and vsmartcard-vpcd (CI has them; never skipped).
 */
import test from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { MemoryStorage } from '@dt/firmware';
import { FileStorage, startPcscd, type PcscdHandle } from '@dt/card-applet-sim';
import { INS, toHex } from '@dt/protocol';
import { tempDir } from './helpers/fixtures.ts';
import { serveCard, stopServedCards } from './helpers/serve.ts';
import { startWorld, worldCard, type World } from './helpers/world.ts';

const BIN = fileURLToPath(new URL('../bin/dt-pos.js', import.meta.url));

interface Done {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs dt-pos; `during` sees the child and its stderr so far (to send it a signal at the right moment). */
function dtPos(
  args: string[],
  env: NodeJS.ProcessEnv,
  opts: { stdin?: string; during?: (stderr: string, p: ChildProcess) => void; killAfterMs?: number } = {},
): Promise<Done> {
  return new Promise((resolve) => {
    // stdin is a pipe kept open: a PIN pad process on the other end does not close it.
    const p = spawn(process.execPath, [BIN, ...args], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    if (opts.stdin !== undefined) p.stdin!.write(opts.stdin);
    p.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr!.on('data', (d: Buffer) => {
      stderr += d.toString();
      opts.during?.(stderr, p);
    });
    // A hang detector, not a timing assertion: far above any tap.
    const timer = setTimeout(() => p.kill('SIGKILL'), opts.killAfterMs ?? 60_000);
    p.on('exit', (code, signal) => {
      clearTimeout(timer);
      p.stdin!.destroy();
      resolve({ code, signal, stdout, stderr });
    });
  });
}

let pcscd: PcscdHandle | undefined;
let world: World | undefined;
const tmp = tempDir('dt-pos-pcsc-cli-');

test.after.always(async () => {
  await stopServedCards();
  await pcscd?.stop();
  await world?.close();
  tmp.cleanup();
});

test.serial(
  'over PC/SC as processes: APPROVED exits 0 (twice, and with the PIN typed on a pipe left open), PIN cancelled exits 1, no card exits 4, one SIGINT ends it with 4, a lost tap exits 7; readers exits',
  async (t) => {
    const dir = tmp.dir;
    world = await startWorld(dir);
    pcscd = await startPcscd();
    const env = { ...process.env, PCSCLITE_CSOCK_NAME: pcscd.socketPath };
    const [slot0, slot1] = pcscd.readers;

    // A terminal certified by the world's bank (dev-pki.json as dt-card's saveDevPki writes it), and its revocation list.
    const pkiDir = join(dir, 'pki');
    mkdirSync(pkiDir);
    const pki = world.tl.pki;
    const party = (p: { keys: { secretKey: Uint8Array }; cert: Uint8Array }) => ({
      secretKey: toHex(p.keys.secretKey),
      cert: toHex(p.cert),
    });
    writeFileSync(
      join(pkiDir, 'dev-pki.json'),
      JSON.stringify({ format: 'dt-dev-pki', version: 1, issuer: party(pki.issuer), ledger: party(pki.ledger), bank: party(pki.bank) }),
    );
    const D = ['--data-dir', join(dir, 'pos')];
    const init = await dtPos(
      [
        ...D,
        'init',
        '--merchant-id',
        'pcsc-shop',
        '--mcc',
        '5411',
        '--name',
        'PCSC Shop',
        '--dev',
        pkiDir,
        '--acquirer',
        world.acquirer.url,
      ],
      env,
    );
    t.is(init.code, 0, init.stderr);
    t.is((await dtPos([...D, 'sync'], env)).code, 0);

    // A card loaded through the real ledger, PIN above 100 KZT, written to a dt-card state file.
    const card = await worldCard(world, 5_000_000, { perPayment: 1_000_000, offlineTotal: 4_000_000, offlineCount: 10, cvmLimit: 10_000 });
    const stateFile = join(dir, 'card.state');
    const fs = FileStorage.create(stateFile, { label: 'pcsc-cli' });
    for (const [slot, bytes] of (card.storage as MemoryStorage).snapshot()) fs.write(slot, bytes);
    fs.close();

    // readers, with nothing served yet: lists both vpcd readers and exits.
    const r0 = await dtPos(['--json', 'readers', '--wait', '5'], env);
    t.is(r0.signal, null, 'dt-pos readers exited on its own');
    t.is(r0.code, 0, r0.stderr);
    t.deepEqual(
      (JSON.parse(r0.stdout) as { pcsc: { name: string }[] }).pcsc.map((r) => r.name),
      [slot0, slot1],
    );

    const served = await serveCard(['--vpcd', '--port', String(pcscd.vpcdPort), stateFile], env);
    try {
      const charge = (amount: string, reader: string, more: string[] = [], opts: Parameters<typeof dtPos>[2] = {}) =>
        dtPos([...D, '--json', 'charge', amount, '--reader', `pcsc:${reader}`, ...more], env, opts);

      const a1 = await charge('50', slot0, ['--timeout', '20']);
      t.is(a1.signal, null, `APPROVED, then it must exit: ${a1.stderr}`);
      t.is(a1.code, 0, a1.stdout + a1.stderr);
      t.is((JSON.parse(a1.stdout) as { outcome: string }).outcome, 'APPROVED');
      // The till takes a second payment.
      const a2 = await charge('20.50', slot0, ['--timeout', '20']);
      t.is(a2.code, 0, a2.stdout + a2.stderr);
      t.is((JSON.parse(a2.stdout) as { payment: { amount: number } }).payment.amount, 2050);

      // Above the card's CVM limit: the PIN comes on stdin, a pipe the PIN pad keeps open.
      const pin = await charge('150', slot0, ['--timeout', '20'], { stdin: `${card.pin}\n` });
      t.is(pin.signal, null, 'exits although stdin stays open');
      t.is(pin.code, 0, pin.stdout + pin.stderr);
      // An empty PIN line cancels: DECLINED, exit 1.
      const cancelled = await charge('150', slot0, ['--timeout', '20'], { stdin: '\n' });
      t.is(cancelled.code, 1, cancelled.stdout + cancelled.stderr);
      t.is((JSON.parse(cancelled.stdout) as { outcome: string; reason: string }).reason, 'PIN_CANCELLED');

      // The empty reader: END NO_CARD, exit 4.
      const none = await charge('10', slot1, ['--timeout', '1']);
      t.is(none.signal, null);
      t.is(none.code, 4, none.stdout + none.stderr);
      t.deepEqual(JSON.parse(none.stdout), { outcome: 'END', reason: 'NO_CARD' });

      // One Ctrl-C while waiting for a card ends it, with its code (END, cancelled).
      let sent = false;
      const int = await dtPos([...D, 'charge', '10', '--reader', `pcsc:${slot1}`, '--timeout', '120'], env, {
        during: (stderr, p) => {
          if (!sent && /present card/.test(stderr)) {
            sent = true;
            p.kill('SIGINT');
          }
        },
      });
      t.true(sent);
      t.is(int.signal, null, `one SIGINT is enough: ${int.stdout}${int.stderr}`);
      t.is(int.code, 4, int.stdout + int.stderr);
      t.regex(int.stdout, /^END: /);
    } finally {
      await served.stop();
    }

    // The card loses power when PAY arrives: PRESENT CARD AGAIN, and with no retry left, exit 7.
    const faulty = await serveCard(['--vpcd', '--port', String(pcscd.vpcdPort), '--cut-before-ins', INS.PAY.toString(16), stateFile], env);
    try {
      const lost = await dtPos([...D, '--json', 'charge', '30', '--reader', `pcsc:${slot0}`, '--timeout', '5', '--retries', '0'], env);
      t.is(lost.signal, null);
      t.is(lost.code, 7, lost.stdout + lost.stderr);
      t.is((JSON.parse(lost.stdout) as { outcome: string }).outcome, 'PRESENT_CARD_AGAIN');
    } finally {
      await faulty.stop();
    }

    // Above the floor limit: ONLINE REQUIRED, exit 3 (decided before any card is needed).
    const big = await dtPos([...D, '--json', 'charge', '60000', '--reader', `pcsc:${slot0}`, '--timeout', '1'], env);
    t.is(big.code, 3, big.stdout + big.stderr);

    // readers with a card present: exits too.
    const r1 = await dtPos(['readers', '--wait', '5'], env);
    t.is(r1.signal, null);
    t.is(r1.code, 0);
  },
);
