/**
 * Child of pcsc.test.ts ("closing a context at any moment of its start-up…"): against the pcscd
 * named by PCSCLITE_CSOCK_NAME, opens PC/SC contexts and closes each at another moment of its
 * start-up (at once, after a tick, as a reader is announced, inside a reader's first status, after
 * 1 to 20 ms), printing `closed <round>` after each. A close that joins a native thread stuck in
 * its wait blocks this process for ever: the parent's hang detector kills it.
 */
import { PcscReaders } from '../../src/index.ts';

const moments = ['now', 'tick', 'reader', 'status', '1', '2', '5', '10', '20'] as const;
const rounds = Number(process.argv[2] ?? 27);
for (let i = 0; i < rounds; i++) {
  const moment = moments[i % moments.length]!;
  await new Promise<void>((resolve, reject) => {
    let closing = false;
    // If the moment never comes (the context failed to start on a loaded machine and retries later), close anyway.
    const fallback = setTimeout(() => close(), 10_000);
    const close = (): void => {
      if (closing) return;
      closing = true;
      clearTimeout(fallback);
      pcsc.close().then(resolve, reject);
    };
    const pcsc: PcscReaders = new PcscReaders({
      onEvent: (e) => {
        if (e.type === 'context' && e.state === 'lost') process.stderr.write(`round ${i}: context lost: ${e.detail}\n`);
        if (e.type !== 'reader' || e.state !== 'added') return;
        if (moment === 'reader') close();
        if (moment === 'status') {
          const raw = (pcsc.findSlot(e.reader)?.slot.nfc as unknown as { reader?: { once(ev: 'status', f: () => void): void } }).reader;
          if (raw) raw.once('status', close);
          else close();
        }
      },
    });
    if (moment === 'now') close();
    else if (moment === 'tick') setImmediate(close);
    else if (/^\d+$/.test(moment)) setTimeout(close, Number(moment));
  });
  process.stdout.write(`closed ${i}\n`);
}
