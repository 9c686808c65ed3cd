/**
 * Golden APDU transcripts (`test/golden/*.apdu`): taps of the payment kernel
 * recorded from the real firmware (card-applet-sim's in-process card), and
 * replayed against the kernel in unit tests (ledgerjs RecordStore pattern).
 *
 * Everything signed or random in a tap is made reproducible rather than
 * masked: the dev PKI, the terminal key, the card's key generation (its HAL
 * random), the load's challenge and token serials and the terminal's nonces
 * come from seeded streams, every clock is fixed, and ECDSA signatures are
 * deterministic (RFC 6979). Recording the same scenario again gives the same
 * bytes, which `golden.test.ts` checks against the committed files; regenerate
 * them with `npm run golden -w terminal` (scripts/golden.ts) after a change
 * of the card's or the kernel's behaviour.
 */
import { MemoryStorage } from '@dt/firmware';
import {
  createDevPki,
  devIssuingBank,
  devLoad,
  InProcessTransport,
  issueDevTerminal,
  personalizeCard,
  SimulatedCard,
} from '@dt/card-applet-sim';
import {
  RecordStore,
  concatBytes,
  identifyCommand,
  isChainedBlock,
  recordingTransport,
  replayTransport,
  sha256,
  signMessage,
  u32be,
  utf8,
  type ApduTransport,
  CardRemovedError,
} from '@dt/protocol';
import {
  buildIdentity,
  DEFAULT_POLICY,
  Journal,
  PaymentKernel,
  TransportReader,
  type RiskPolicy,
  type TapOutcome,
  type TerminalIdentity,
} from '../../src/index.ts';
import { ScriptedPinPad } from './fixtures.ts';

/** The fixed time of every golden tap (seconds). */
export const GOLDEN_NOW = 1_790_000_000;
const DAY = 86_400;

/** The card's certified limits: PIN above 10 000.00 KZT, at most 12 000.00 KZT per payment. */
export const GOLDEN_LIMITS = { perPayment: 1_200_000, offlineTotal: 20_000_000, offlineCount: 20, cvmLimit: 1_000_000 };
/** The terminal's policy: its own PIN limit is above the card's, so the card is the one that asks (6982). */
export const GOLDEN_POLICY: RiskPolicy = { ...DEFAULT_POLICY, cvmLimit: 1_500_000, floorLimit: 5_000_000, pendingCap: 100_000_000 };
/** The card's PIN (a test value, kept in clear in the transcripts so that they replay byte for byte). */
export const GOLDEN_PIN = '1234';

/** A deterministic byte stream: SHA-256(seed ‖ counter) blocks. Same seed, same bytes. */
export function seeded(seed: string): (n: number) => Uint8Array {
  const s = utf8(seed);
  let counter = 0;
  let buf: Uint8Array = new Uint8Array(0);
  return (n: number) => {
    while (buf.length < n) buf = concatBytes(buf, sha256(concatBytes(s, u32be(counter++))));
    const out = buf.slice(0, n);
    buf = buf.slice(n);
    return out;
  };
}

/** The golden world: one dev PKI and one terminal, the same in every recording and replay. */
export function goldenWorld(): { pki: ReturnType<typeof createDevPki>; identity: TerminalIdentity } {
  const pki = createDevPki({ random: seeded('golden pki'), now: GOLDEN_NOW - 30 * DAY });
  const t = issueDevTerminal(pki, {
    merchant: 'golden-shop',
    mcc: 5411,
    name: 'Golden shop',
    now: GOLDEN_NOW - 30 * DAY,
    random: seeded('golden terminal'),
  });
  const identity = buildIdentity({ keyPair: t.keys, chain: t.chain, root: pki.issuer.cert, ledgerCert: pki.ledger.cert }, GOLDEN_NOW);
  return { pki, identity };
}

/** One golden scenario: the taps it makes and the outcomes they must have. */
export interface GoldenScenario {
  /** File name without `.apdu`. */
  readonly name: string;
  /** What the transcript shows (its header comment). */
  readonly description: string;
  /** Amount of each tap, in tiyn. */
  readonly taps: readonly number[];
  /** During recording: lose the answer to the last PAY block of this tap (0-based), as a card pulled from the field does. */
  readonly loseFirstPayAnswerOf?: number;
  /** The outcome of each tap, as `kind` and `reason` (or `recovered` for an approval). */
  readonly expect: readonly { kind: TapOutcome['kind']; reason?: string; recovered?: boolean; cvm?: number }[];
}

/** The golden scenarios, one file each. */
export const GOLDEN_SCENARIOS: readonly GoldenScenario[] = [
  {
    name: 'approved',
    description: 'A plain approved tap: SELECT, then the chained PAY and its handover through 61xx/GET RESPONSE.',
    taps: [250_000],
    expect: [{ kind: 'APPROVED', recovered: false, cvm: 0 }],
  },
  {
    name: 'pin',
    description:
      'A tap needing the PIN: the card answers PAY with 6982 (its CVM limit), the kernel sends VERIFY PIN, then PAY again with a fresh nonce.',
    taps: [1_100_000],
    expect: [{ kind: 'APPROVED', recovered: false, cvm: 1 }],
  },
  {
    name: 'torn-retry',
    description:
      'A torn tap and its retry: the answer to PAY never comes back (the card has signed); the next tap reads GET STATUS (lastNonce) and sends PAY with retryOf, and the card answers the same handover.',
    taps: [400_000, 400_000],
    loseFirstPayAnswerOf: 0,
    expect: [
      { kind: 'PRESENT_CARD_AGAIN', reason: 'NO_ANSWER' },
      { kind: 'APPROVED', recovered: true, cvm: 0 },
    ],
  },
  {
    name: 'refused',
    description: "A card refusing: PAY above the card's per-payment limit is answered 6985; the kernel asks to go online (CARD_LIMITS).",
    taps: [1_300_000],
    expect: [{ kind: 'ONLINE_REQUIRED', reason: 'CARD_LIMITS' }],
  },
];

/** The error a lost card gives (what the terminal's readers throw when the card leaves the field). */
const cardRemoved = (): CardRemovedError => new CardRemovedError('the card left the field');

/**
 * Runs the taps of `scenario` against `transport` with one fresh journal and
 * kernel (the same in recording and replay); `beforeTap(i)` runs before tap
 * `i`. Returns the outcomes.
 */
async function runTaps(
  scenario: GoldenScenario,
  transport: ApduTransport,
  beforeTap: (i: number) => void = () => {},
): Promise<TapOutcome[]> {
  const { pki, identity } = goldenWorld();
  const journal = Journal.open(':memory:', { now: () => GOLDEN_NOW });
  try {
    const crlIssued = GOLDEN_NOW - 60;
    journal.storeCrl({
      version: 1,
      issued: crlIssued,
      bytes: signMessage('RevocationList', { version: 1, issued: crlIssued, revoked: [] }, pki.ledger.signer),
      revoked: [],
    });
    const kernel = new PaymentKernel({
      identity,
      journal,
      policy: GOLDEN_POLICY,
      pinPad: new ScriptedPinPad(scenario.taps.map(() => GOLDEN_PIN)),
      now: () => GOLDEN_NOW,
      random: seeded(`golden nonces ${scenario.name}`),
    });
    const reader = new TransportReader('golden', transport, { apduTimeoutMs: 60_000 });
    const outcomes: TapOutcome[] = [];
    for (const [i, amount] of scenario.taps.entries()) {
      beforeTap(i);
      outcomes.push(await kernel.charge(reader, amount));
    }
    return outcomes;
  } finally {
    journal.close();
  }
}

/**
 * Records `scenario` from the real firmware: a fresh card personalized and
 * loaded with seeded randomness, then the taps through a recording transport.
 * Returns the transcript text and the outcomes.
 */
export async function recordGolden(scenario: GoldenScenario): Promise<{ text: string; outcomes: TapOutcome[] }> {
  const { pki } = goldenWorld();
  const card = new SimulatedCard({ storage: new MemoryStorage(), random: seeded(`golden card ${scenario.name}`), now: null });
  const setup = new InProcessTransport(card);
  await personalizeCard(setup, devIssuingBank(pki), { pin: GOLDEN_PIN, puk: '12345678', limits: GOLDEN_LIMITS, now: GOLDEN_NOW - DAY });
  await devLoad(setup, pki, [2_000_000, 3_000_000], { now: GOLDEN_NOW - DAY + 60, random: seeded(`golden load ${scenario.name}`) });
  card.powerOff();
  // The taps: the kernel's reader over a recorder over the card (which loses one answer when asked).
  let tap = -1;
  let lost = false;
  const lossy: ApduTransport = {
    async transmit(apdu, o) {
      const answer = await setup.transmit(apdu, o);
      if (!lost && tap === scenario.loseFirstPayAnswerOf && identifyCommand(apdu) === 'PAY' && !isChainedBlock(apdu)) {
        // The card has processed PAY and committed; it leaves the field before its answer does.
        lost = true;
        card.powerOff();
        throw cardRemoved();
      }
      return answer;
    },
  };
  const store = new RecordStore();
  const outcomes = await runTaps(scenario, recordingTransport(lossy, store), (i) => {
    tap = i;
    // Each tap is a new presentation of the card: it comes into the field unpowered.
    card.powerOff();
  });
  const text = store.toString([
    `golden APDU transcript: ${scenario.name}`,
    ...wrap(scenario.description),
    'Recorded from the real firmware (card-applet-sim, in process) by terminal/scripts/golden.ts with fixed keys,',
    'nonces and times; regenerate with `npm run golden -w terminal`. Replayed against the kernel by test/golden.test.ts.',
    `taps (tiyn): ${scenario.taps.join(', ')}; card PIN ${GOLDEN_PIN} (test value)`,
  ]);
  return { text, outcomes };
}

function wrap(text: string, width = 110): string[] {
  const words = text.split(' ');
  const lines: string[] = [];
  let cur = '';
  for (const w of words) {
    if (cur && cur.length + 1 + w.length > width) {
      lines.push(cur);
      cur = w;
    } else cur = cur ? `${cur} ${w}` : w;
  }
  if (cur) lines.push(cur);
  return lines;
}

/**
 * Replays a golden transcript against the kernel: the same taps, the
 * reader's transport answering from `text` (any command that differs, and
 * any exchange left over, fails `store.ensureQueueEmpty()`).
 */
export async function replayGolden(
  scenario: GoldenScenario,
  text: string,
  over: Partial<Pick<GoldenScenario, 'taps'>> = {},
): Promise<{ outcomes: TapOutcome[]; store: RecordStore }> {
  const store = RecordStore.fromString(text);
  const outcomes = await runTaps({ ...scenario, ...over }, replayTransport(store, { noAnswer: cardRemoved }));
  return { outcomes, store };
}
