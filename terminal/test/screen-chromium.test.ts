/**
 * The attendant screen in headless Chromium, against `dt-pos serve` (a process) through a real
 * pcscd with the simulated card (`dt-card serve --vpcd`, a process): the page loads with the
 * token from its URL fragment, the amount is typed on its keypad (mouse) and keyboard, Charge
 * shows "Present card", the card is then put on the reader, the page shows APPROVED in its
 * alert region, the receipt and the payment in the list with its state; a screenshot is taken
 * and must be a real page (many pixels differ from the background, in more than a few colours;
 * `DT_SCREENSHOT=file.png` keeps it). Then the payment is voided with its row's Void button, a
 * second payment (from the register) settles and is refunded in part with its Refund button and
 * form; the rows, the server and the report agree.
 *
 * Chromium is driven over the DevTools protocol through a pipe (test/helpers/chromium.ts).
 * Without a browser the test is skipped locally and FAILS when CI=true (CI installs it:
 * scripts/install-system.sh). Needs root, pcscd and vsmartcard-vpcd.
 */
import test from 'ava';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { decodePng, findBrowser, launchBrowser, type Browser } from './helpers/chromium.ts';
import { tempDir } from './helpers/fixtures.ts';
import { ecrClient, serveCard, startServe, startShop, type Serve, type Shop, stopServedCards } from './helpers/serve.ts';

const browserBin = findBrowser();
const inCi = process.env.CI === 'true';
const missing =
  'no Chromium found (chromium, chromium-browser, google-chrome on PATH or $CHROMIUM_BIN); install it with scripts/install-system.sh';

let shop: Shop | undefined;
let serve: Serve | undefined;
let browser: Browser | undefined;
let card: { stop: () => Promise<void> } | undefined;
const tmp = tempDir('dt-pos-screen-');

test.after.always(async () => {
  await stopServedCards();
  await browser?.close();
  await card?.stop();
  if (serve && serve.proc.exitCode === null) {
    serve.proc.kill('SIGTERM');
    await serve.exited;
  }
  await shop?.close();
  tmp.cleanup();
});

if (!browserBin && !inCi) {
  test.skip(`attendant screen in headless Chromium (skipped: ${missing})`, () => {});
} else {
  test.serial(
    'attendant screen in headless Chromium: keypad, Present card, the card tapped through pcscd, APPROVED, receipt, list, screenshot',
    async (t) => {
      if (!browserBin) return t.fail(`CI=true but ${missing}`);
      shop = await startShop(tmp.dir);
      serve = await startServe(shop.dataDir, shop.env);
      const ecr = ecrClient(serve.url, shop.dataDir);
      browser = await launchBrowser(browserBin, 1280, 1100);
      const b = browser;
      const text = (sel: string) => b.evaluate<string>(`document.querySelector(${JSON.stringify(sel)}).textContent`);

      await b.send('Page.navigate', { url: `${serve.url}/#token=${encodeURIComponent(ecr.token)}` });
      await b.waitFor(`document.body && document.body.dataset.ready === 'true'`, 'the page to connect');
      t.is(await b.evaluate<string>('location.hash'), '', 'the token is taken out of the address bar');
      await b.waitFor(`document.getElementById('reader-state').textContent.includes('ready')`, 'the reader state');
      t.regex(await text('#crl-age'), /^v\d+, \d+ (s|min|h) old/);

      // 1 2 on the keypad (mouse), then 3, a wrong digit deleted, and 4 on the keyboard: 12.34 KZT
      // (below the card's CVM limit of 100 KZT: no PIN).
      for (const k of ['1', '2']) await b.evaluate(`document.querySelector('[data-key="${k}"]').click()`);
      for (const key of ['3', '9', 'Backspace', '4']) {
        const code = key === 'Backspace' ? { windowsVirtualKeyCode: 8, code: 'Backspace' } : { text: key, code: `Digit${key}` };
        await b.send('Input.dispatchKeyEvent', { type: 'keyDown', key, ...code });
        await b.send('Input.dispatchKeyEvent', { type: 'keyUp', key, ...code });
      }
      t.is(await text('#amount'), '12.34');
      // Accessible names: the amount and the keypad are labelled, the outcome is an alert region.
      t.is(await b.evaluate<string>(`document.querySelector('label[for="amount"]').textContent`), 'Amount (KZT)');
      t.is(await b.evaluate<string>(`document.getElementById('outcome').getAttribute('aria-live')`), 'assertive');
      t.is(await b.evaluate<string>(`document.getElementById('phase').getAttribute('aria-live')`), 'polite');

      // Charge: the screen asks for the card; none is there yet.
      await b.evaluate(`document.getElementById('charge').click()`);
      await b.waitFor(`document.getElementById('phase').textContent === 'Present card'`, 'Present card');
      t.false(await b.evaluate<boolean>(`document.getElementById('cancel').disabled`), 'Cancel is offered while waiting');

      // The card is tapped: dt-card connects to pcscd's vpcd reader.
      card = await serveCard(['--vpcd', '--port', String(shop.pcscd.vpcdPort), shop.stateFile], shop.env);
      await b.waitFor(`document.getElementById('outcome-text').textContent !== ''`, 'the outcome');
      t.is(await text('#outcome-text'), 'APPROVED', await text('#outcome-reason'));
      t.regex(await text('#outcome-reason'), /^12\.34 KZT — receipt #1$/);
      t.false(await b.evaluate<boolean>(`document.getElementById('receipt').hidden`));
      t.regex(await text('#receipt-text'), /Amount {5}12\.34 KZT/);

      // The list holds the payment, approved, with its settlement state; the server agrees.
      await b.waitFor(`document.querySelector('#payments tr[data-state="approved"]')`, 'the list row');
      const row = await b.evaluate<string[]>(
        `[...document.querySelector('#payments tr[data-state="approved"]').cells].map((c) => c.textContent)`,
      );
      t.is(row[1], '12.34 KZT');
      t.is(row[2], 'APPROVED');
      t.true(['pending verification', 'submitted', 'settled'].includes(row[3]!), row[3]);
      t.is(row[4], '#1');
      const list = (await ecr.call<{ payments: { reference: string; state: string; amount: number }[] }>('GET', '/v1/payments')).body
        .payments;
      t.deepEqual(
        list.map((p) => [p.reference, p.state, p.amount]),
        [[row[0], 'approved', 1234]],
      );
      await b.waitFor(`document.getElementById('open-batch')`, 'the report');
      t.regex(await text('#open-batch'), /1 payment\(s\), 12\.34 KZT/);

      // Close the day's batch from the screen.
      await b.evaluate(`document.getElementById('close-batch').click()`);
      await b.waitFor(`document.getElementById('close-result').textContent !== ''`, 'the close');
      t.is(await text('#close-result'), 'Batch closed: 1 payment(s), 12.34 KZT.');

      // A screenshot: a real page, not a blank one.
      const shot = await b.send<{ data: string }>('Page.captureScreenshot', { format: 'png' });
      const png = Buffer.from(shot.data, 'base64');
      writeFileSync(process.env.DT_SCREENSHOT ?? join(tmp.dir, 'screen.png'), png);
      const img = decodePng(png);
      t.is(img.width, 1280);
      let differing = 0;
      const colours = new Set<number>();
      const [r0, g0, b0] = [img.rgba[0]!, img.rgba[1]!, img.rgba[2]!];
      for (let i = 0; i < img.rgba.length; i += 4) {
        const [r, g, bl] = [img.rgba[i]!, img.rgba[i + 1]!, img.rgba[i + 2]!];
        if (Math.abs(r - r0) + Math.abs(g - g0) + Math.abs(bl - b0) > 48) differing++;
        if (colours.size < 1000) colours.add((r << 16) | (g << 8) | bl);
      }
      t.true(differing > img.width * img.height * 0.01, `${differing} pixels differ from the background`);
      t.true(colours.size > 20, `${colours.size} colours`);
      // The approved outcome is drawn in its green (#0a6b2d) somewhere on the page.
      let green = 0;
      for (let i = 0; i < img.rgba.length; i += 4)
        if (img.rgba[i] === 0x0a && img.rgba[i + 1] === 0x6b && img.rgba[i + 2] === 0x2d) green++;
      t.true(green > 500, `${green} pixels of the APPROVED green`);

      // Void: the payment is not settled yet (the acquirer forwards only when told), so its row offers Void.
      const rowOf = (ref: string) => `document.querySelector('#payments tr[data-reference=${JSON.stringify(ref)}]')`;
      const ref1 = row[0]!;
      await b.waitFor(`${rowOf(ref1)}.querySelector('button[data-action="void"]')`, 'the Void button');
      t.is(
        await b.evaluate<string>(`${rowOf(ref1)}.querySelector('button[data-action="void"]').getAttribute('aria-label')`),
        `Void payment ${ref1}`,
      );
      await b.evaluate(`${rowOf(ref1)}.querySelector('button[data-action="void"]').click()`);
      await b.waitFor(`document.getElementById('adjust-result').textContent.startsWith('VOIDED')`, 'the void');
      t.is(await text('#adjust-result'), `VOIDED 12.34 KZT (${ref1}): pending ledger confirmation.`);
      await b.waitFor(`${rowOf(ref1)}.cells[3].textContent.startsWith('voided')`, 'the voided row');
      t.false(await b.evaluate<boolean>(`!!${rowOf(ref1)}.querySelector('button[data-action="void"]')`), 'no second Void');
      const v = await ecr.call<{ payment: { voided: boolean; adjustments: { kind: string }[] } }>('GET', `/v1/payments/${ref1}`);
      t.true(v.body.payment.voided, 'the server journalled the void');

      // A second payment (from the register), settled, then refunded in part from the screen.
      t.is((await ecr.call('POST', '/v1/payments', { amount: 2000, reference: 'till-2' })).status, 201);
      await b.waitFor(`${rowOf('till-2')} && ${rowOf('till-2')}.dataset.state === 'approved'`, 'the second payment');
      // Sent by the background sync (woken by the approval), then settled by the ledger; a batch close wakes the sync.
      for (let i = 0; i < 100; i++) {
        const p = await ecr.call<{ payment: { state: string } }>('GET', '/v1/payments/till-2');
        if (p.body.payment.state === 'submitted') break;
        await new Promise((r) => setTimeout(r, 100));
      }
      await shop.world.acquirer.forwardNow();
      await ecr.call('POST', '/v1/batch/close');
      await b.waitFor(`${rowOf('till-2')}.querySelector('button[data-action="refund"]')`, 'the Refund button');
      await b.evaluate(`${rowOf('till-2')}.querySelector('button[data-action="refund"]').click()`);
      t.false(await b.evaluate<boolean>(`document.getElementById('refund-form').hidden`));
      t.is(await b.evaluate<string>(`document.getElementById('refund-amount').value`), '20.00');
      await b.evaluate(`document.getElementById('refund-amount').value = '5.00'`);
      await b.evaluate(`document.getElementById('refund-confirm').click()`);
      await b.waitFor(`document.getElementById('adjust-result').textContent.startsWith('REFUNDED')`, 'the refund');
      t.is(await text('#adjust-result'), 'REFUNDED 5.00 KZT (till-2): credited to the card at its next sync.');
      t.true(await b.evaluate<boolean>(`document.getElementById('refund-form').hidden`));
      const r = await ecr.call<{ settlement: string; payment: { refunded: number; refundable: number } }>('GET', '/v1/payments/till-2');
      t.like(r.body, { settlement: 'settled, partly refunded', payment: { refunded: 500, refundable: 1500 } });
      await b.waitFor(`${rowOf('till-2')}.cells[3].textContent === 'settled, partly refunded'`, 'the refunded row');
      await b.waitFor(`document.getElementById('adjustments')`, 'the report of voids and refunds');
      t.regex(await text('#adjustments'), /refunds: confirmed 0\.00 KZT \(0\), pending 5\.00 KZT \(1\)/);

      t.deepEqual(
        b.console.filter((l) => l.startsWith('exception') || l.startsWith('error')),
        [],
        'no script errors in the page',
      );
    },
  );
}
