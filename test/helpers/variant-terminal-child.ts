/**
 * A terminal process for story variant (c): takes one payment on a real
 * reader and prints `APPROVED <transfer hash> <amount>` only after the
 * kernel returned APPROVED (after the journal commit), as a terminal shows
 * the outcome to the merchant; then it stays up (its next job would follow)
 * until the parent SIGKILLs it. Any other outcome is printed and exits 1.
 *
 * argv: dataDir readerSpec amount, where readerSpec is `pcsc:<reader name>`
 * (PCSCLITE_CSOCK_NAME names the private pcscd) or `serial:<pty path>`.
 */
import { toHex } from '@dt/protocol';
import { DEFAULT_POLICY, Journal, PaymentKernel, PcscReaders, loadIdentity, openSerialReader, type CardReader } from '@dt/terminal';

const [dataDir, spec, amountArg] = process.argv.slice(2) as [string, string, string];
const amount = Number(amountArg);
const identity = loadIdentity(dataDir, Math.floor(Date.now() / 1000));
const journal = Journal.open(`${dataDir}/journal.sqlite`);
let reader: CardReader;
if (spec.startsWith('pcsc:')) {
  const pcsc = new PcscReaders();
  await pcsc.waitForReaders(15_000);
  reader = pcsc.reader(spec.slice('pcsc:'.length));
} else {
  reader = await openSerialReader(spec.slice('serial:'.length), { frameTimeoutMs: 500, attempts: 6 });
}
const kernel = new PaymentKernel({ identity, journal, policy: DEFAULT_POLICY, timeouts: { cardMs: 10_000, tapMs: 15_000 } });
let o = await kernel.charge(reader, amount);
// A real reader may still be settling (card just inserted): the merchant asks for the card again.
for (let i = 0; i < 20 && o.kind === 'PRESENT_CARD_AGAIN'; i++) {
  await new Promise((r) => setTimeout(r, 250));
  o = await kernel.charge(reader, amount);
}
if (o.kind === 'APPROVED') {
  process.stdout.write(`APPROVED ${toHex(o.payment.transferHash)} ${o.payment.amount}\n`);
  // Stay up: the kill comes right after the outcome is shown.
  setInterval(() => {}, 60_000);
} else {
  process.stdout.write(`${o.kind} ${'reason' in o ? o.reason : ''}\n`);
  process.exit(1);
}
