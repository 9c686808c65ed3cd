/**
 * startPcscd's `socketPath` option: a daemon stopped and a new one started
 * on the same client socket path and vpcd ports (what a PC/SC client process
 * must see to follow a pcscd restart, since libpcsclite reads
 * PCSCLITE_CSOCK_NAME once per process), and the socket directory cleanup.
 *
 * Needs root and the Debian packages pcscd, vsmartcard-vpcd, pcsc-tools.
 * Skipped locally without them; never skipped in CI (CI=true).
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname } from 'node:path';
import { startPcscd } from '../src/index.ts';
import type { PcscdHandle } from '../src/index.ts';
import { needsPcscd } from './helpers.ts';

const gate = needsPcscd();
const serial = gate.run ? test.serial : test.serial.skip;
if (!gate.run) test.serial.skip(`pcscd tests skipped locally: ${gate.reason}`, () => undefined);

/** Reader names as a fresh PC/SC client process lists them through `socket`. */
function listReaders(socket: string): string {
  const r = spawnSync('pcsc_scan', ['-r'], { env: { ...process.env, PCSCLITE_CSOCK_NAME: socket }, encoding: 'utf8', timeout: 15_000 });
  return `${r.stdout}${r.stderr}`;
}

serial('a new pcscd on the same socket path and vpcd ports serves clients; stop() removes the directory it created', async (t) => {
  t.timeout(60_000);
  const daemons: PcscdHandle[] = [];
  t.teardown(async () => {
    for (const d of daemons.reverse()) await d.stop().catch(() => undefined);
  });
  const first = await startPcscd();
  daemons.push(first);
  t.regex(listReaders(first.socketPath), /Virtual PCD 00 00/);
  await first.stop();
  t.false(existsSync(first.socketPath), 'the stopped daemon took its socket along');
  t.regex(listReaders(first.socketPath), /Service not available|SCardEstablishContext/i);

  const second = await startPcscd({ socketPath: first.socketPath, vpcdPort: first.vpcdPort });
  daemons.push(second);
  t.is(second.socketPath, first.socketPath);
  t.is(second.vpcdPort, first.vpcdPort);
  t.is(second.env.PCSCLITE_CSOCK_NAME, first.socketPath);
  t.regex(listReaders(second.socketPath), /Virtual PCD 00 01/);
  await second.stop();
  t.false(existsSync(dirname(first.socketPath)), 'stop() removes the socket directory it created');
  t.false(existsSync(dirname(dirname(first.socketPath))), 'and its parent, which it created too');
});

serial('socketPath must name pcscd.comm (the only name pcscd uses)', async (t) => {
  await t.throwsAsync(startPcscd({ socketPath: '/tmp/dt-not-here/other.sock' }), { message: /pcscd\.comm/ });
  t.false(existsSync('/tmp/dt-not-here'));
});
