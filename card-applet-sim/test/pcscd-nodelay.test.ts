/**
 * The private pcscd's TCP_NODELAY shim (native/vpcd-nodelay.c, built by
 * `npm run setup`): without it every APDU through Debian's vpcd waits ~40 ms
 * for a delayed ACK. These tests prove the fix is active without timing
 * anything: the harness reports the shim, the dynamic loader mapped it into
 * the real pcscd (its /proc/<pid>/maps), and once a card connects the shim
 * has set TCP_NODELAY on vpcd's accepted socket (read back with getsockopt
 * inside pcscd and logged). A daemon started without it, or with a shim that
 * does not exist, still works and says why it is slow.
 *
 * Needs root and the Debian packages pcscd, vsmartcard-vpcd; the shim must
 * be built (npm run setup). Skipped locally without pcscd; never skipped in
 * CI (CI=true).
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { MemoryStorage } from '@dt/firmware';
import { SimulatedCard, VPCD_NODELAY_SHIM, VpcdClient, startPcscd } from '../src/index.ts';
import type { PcscdHandle } from '../src/index.ts';
import { needsPcscd } from './helpers.ts';

const gate = needsPcscd();
const serial = gate.run ? test.serial : test.serial.skip;
if (!gate.run) test.serial.skip(`pcscd tests skipped locally: ${gate.reason}`, () => undefined);

const maps = (pid: number): string => readFileSync(`/proc/${pid}/maps`, 'utf8');
const readerList = (d: PcscdHandle): string => {
  const r = spawnSync('pcsc_scan', ['-r'], { env: d.env, encoding: 'utf8', timeout: 15_000 });
  return `${r.stdout}${r.stderr}`;
};

async function until(cond: () => boolean, timeoutMs: number): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
  return true;
}

serial("pcscd runs with the shim: mapped into the daemon, and vpcd's socket to the card gets TCP_NODELAY", async (t) => {
  t.timeout(60_000);
  t.true(existsSync(VPCD_NODELAY_SHIM), `${VPCD_NODELAY_SHIM} is missing: run npm run setup (it builds the shim)`);
  const pcscd = await startPcscd();
  const client = new VpcdClient(new SimulatedCard({ storage: new MemoryStorage() }), { port: pcscd.vpcdPort, slot: 0, reconnectMs: 100 });
  t.teardown(async () => {
    await client.stop();
    await pcscd.stop();
  });
  t.true(pcscd.vpcdNoDelay.active, `shim not active: ${pcscd.vpcdNoDelay.reason}`);
  t.truthy(pcscd.vpcdNoDelay.shim);
  t.true(
    maps(pcscd.pid)
      .split('\n')
      .some((l) => l.endsWith(` ${pcscd.vpcdNoDelay.shim}`)),
    'the dynamic loader mapped the shim into pcscd',
  );
  const log = (): string => readFileSync(pcscd.logPath, 'utf8');
  t.regex(log(), new RegExp(`dt-vpcd-nodelay: loaded in pid ${pcscd.pid}\\b`));
  // The card connects to vpcd's slot 0; pcscd accepts it on its next presence poll.
  client.start();
  await client.waitConnected(10_000);
  const line = new RegExp(`dt-vpcd-nodelay: TCP_NODELAY on fd \\d+ \\(accepted, local port ${pcscd.vpcdPort}\\)`);
  t.true(await until(() => line.test(log()), 15_000), `no TCP_NODELAY line for port ${pcscd.vpcdPort} in the pcscd log:\n${log()}`);
});

serial('without the shim (disabled, or a path that does not exist) pcscd still serves readers and the handle says why', async (t) => {
  t.timeout(60_000);
  const off = await startPcscd({ noDelayShim: false });
  t.teardown(() => off.stop());
  t.false(off.vpcdNoDelay.active);
  t.regex(off.vpcdNoDelay.reason ?? '', /disabled/);
  t.false(maps(off.pid).includes('dt-vpcd-nodelay'), 'no shim in the daemon');
  t.regex(readerList(off), /Virtual PCD 00 00/);
  await off.stop();

  const missing = await startPcscd({ noDelayShim: '/nonexistent/libdt-vpcd-nodelay.so' });
  t.teardown(() => missing.stop());
  t.false(missing.vpcdNoDelay.active);
  t.regex(missing.vpcdNoDelay.reason ?? '', /not found/);
  t.regex(readerList(missing), /Virtual PCD 00 00/);
});
