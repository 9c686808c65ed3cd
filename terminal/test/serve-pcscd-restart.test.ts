/**
 * `dt-pos serve` follows pcscd: a payment approved; pcscd stops under the running service
 * (its status says the reader is `down`); a new pcscd on the same socket and vpcd ports comes
 * up (the reader is back, `ready`), and the next payment is approved by the same process.
 *
 * Needs root, pcscd and vsmartcard-vpcd (CI has them; never skipped).
 */
import test from 'ava';
import { startPcscd, type PcscdHandle } from '@dt/card-applet-sim';
import { tempDir } from './helpers/fixtures.ts';
import { ecrClient, serveCard, startServe, startShop, type Serve, type Shop, stopServedCards } from './helpers/serve.ts';

let shop: Shop | undefined;
let serve: Serve | undefined;
let second: PcscdHandle | undefined;
const tmp = tempDir('dt-pos-serve-restart-');

test.after.always(async () => {
  await stopServedCards();
  if (serve && serve.proc.exitCode === null) {
    serve.proc.kill('SIGTERM');
    await serve.exited;
  }
  // Newest first: an older handle's stop() removes the shared socket directory.
  await second?.stop().catch(() => undefined);
  await shop?.close().catch(() => undefined);
  tmp.cleanup();
});

test.serial('dt-pos serve: pcscd stops and comes back under the running service; the next payment is approved', async (t) => {
  shop = await startShop(tmp.dir);
  const { env, dataDir, stateFile } = shop;
  serve = await startServe(dataDir, env);
  const s = serve;
  const ecr = ecrClient(s.url, dataDir);
  const pay = async (reference: string, amount: number): Promise<string> => {
    const done = ecr.events((ev) => ev.some((e) => e.type === 'outcome' && e.data.reference === reference));
    const r = await ecr.call('POST', '/v1/payments', { amount, reference });
    t.is(r.status, 201, JSON.stringify(r.body));
    return (await done).find((e) => e.type === 'outcome')!.data.outcome as string;
  };

  let card = await serveCard(['--vpcd', '--port', String(shop.pcscd.vpcdPort), stateFile], env);
  t.is(await pay('before', 1000), 'APPROVED');
  await card.stop();

  let mark = s.lines.length;
  await shop.pcscd.stop();
  await s.waitLine((l) => l.event === 'reader' && l.state === 'down', 'the reader down', mark);
  const down = (await ecr.call<{ reader: { state: string; detail?: string } }>('GET', '/v1/status')).body.reader;
  t.is(down.state, 'down');
  t.truthy(down.detail);

  mark = s.lines.length;
  second = await startPcscd({ socketPath: shop.pcscd.socketPath, vpcdPort: shop.pcscd.vpcdPort });
  await s.waitLine((l) => l.event === 'reader' && l.state === 'ready', 'the reader back', mark);
  card = await serveCard(['--vpcd', '--port', String(second.vpcdPort), stateFile], env);
  t.is(await pay('after', 2000), 'APPROVED');
  await card.stop();
  const list = (await ecr.call<{ payments: { reference: string; state: string }[] }>('GET', '/v1/payments')).body.payments;
  t.deepEqual(
    list.map((p) => [p.reference, p.state]),
    [
      ['after', 'approved'],
      ['before', 'approved'],
    ],
  );
  t.is(s.proc.exitCode, null, 'the same process served both');
});
