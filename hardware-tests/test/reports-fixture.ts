/**
 * Lab runs for the report tests: one built by hand (every status, hostile
 * text from "the card", an endurance table), optionally with a timing
 * result (synthetic samples or real ones from timeTaps), and a small
 * strict XML parser to check the JUnit report is well-formed.
 */
import {
  PHASES,
  summarize,
  type CaseResult,
  type LabRun,
  type Phase,
  type PhaseStats,
  type SuiteResult,
  type TimingResult,
} from '../src/model.ts';
import { phaseStats } from '../src/stats.ts';

/** Text a hostile or broken card could put into names and messages. */
export const NASTY = `<b>&"'</b> </script><!-- \u0001\u0008\u000b\u001b\uffff tail`;

/** A timing result from deterministic synthetic samples (a spread-out distribution per phase). */
export function syntheticTiming(taps = 60): TimingResult {
  const base: Record<Phase, number> = { select: 1, request: 2.5, cardSigning: 20, verification: 40, journalCommit: 1.8, total: 0 };
  const samples = Object.fromEntries(PHASES.map((p) => [p, [] as number[]])) as Record<Phase, number[]>;
  for (let i = 0; i < taps; i++) {
    let sum = 0;
    for (const p of PHASES) {
      if (p === 'total') continue;
      // A deterministic wobble: every phase gets several distinct values.
      const v = base[p] * (1 + ((i * 7919 + p.length * 31) % 97) / 120);
      samples[p].push(v);
      sum += v;
    }
    samples.total.push(sum + 0.5 + (i % 5) * 0.1);
  }
  const phases = Object.fromEntries(PHASES.map((p) => [p, phaseStats(samples[p])])) as Record<Phase, PhaseStats>;
  return { taps, approved: taps, amount: 100, phases, syncs: Math.floor(taps / 10), outcomes: { APPROVED: taps } };
}

const c = (suite: CaseResult['suite'], name: string, status: CaseResult['status'], extra: Partial<CaseResult> = {}): CaseResult => ({
  suite,
  name,
  description: `checks ${name}`,
  status,
  durationMs: 12.5,
  ...extra,
});

/** A hand-built run; `timing` adds a timing suite with that result. */
export function handRun(timing?: TimingResult): LabRun {
  const suites: SuiteResult[] = [
    {
      name: 'conformance',
      startedAt: '2026-11-23T10:00:00.000Z',
      durationMs: 1234,
      cases: [
        c('conformance', 'select-dt-applet', 'passed', {
          details: { sw: '9000' },
          transcript: 'transcripts/conformance/select-dt-applet.apdu',
        }),
        c('conformance', 'wrong-cla', 'failed', {
          message: `expected SW 6E00, got 9000 ${NASTY}`,
          transcript: 'transcripts/conformance/wrong-cla.apdu',
        }),
        c('conformance', 'oversize-data', 'error', { message: 'reader vanished: SCARD_E_NO_SERVICE' }),
        c('conformance', 'chaining-get-response', 'skipped', { message: 'card does not chain responses' }),
        c('conformance', `odd-name-${NASTY}`, 'passed', { details: { note: NASTY }, transcript: 'https://evil.example/x' }),
      ],
    },
    {
      name: 'robustness',
      startedAt: '2026-11-23T10:00:01.300Z',
      durationMs: 4321,
      cases: [
        c('robustness', 'card-removed-mid-pay', 'passed', { details: { tornRecovered: true } }),
        c('robustness', 'reader-unplugged', 'skipped', { message: 'needs --control' }),
      ],
    },
  ];
  if (timing) {
    suites.push({
      name: 'timing',
      startedAt: '2026-11-23T10:00:06.000Z',
      durationMs: 9000,
      cases: [
        c('timing', 'tap-latency', timing.approved === timing.taps ? 'passed' : 'failed', { details: { approved: timing.approved } }),
      ],
      timing,
    });
  }
  suites.push({
    name: 'endurance',
    startedAt: '2026-11-23T10:00:15.000Z',
    durationMs: 20000,
    cases: [c('endurance', 'pay-until-limits-and-sync', 'passed')],
    endurance: {
      rounds: [
        {
          round: 1,
          payments: 10,
          paid: 1000,
          stoppedBy: 'ONLINE_REQUIRED/CARD_LIMITS',
          sync: 'synced',
          balanceBefore: 100000,
          balanceAfter: 99000,
        },
        {
          round: 2,
          payments: 10,
          paid: 1000,
          stoppedBy: 'ONLINE_REQUIRED/CARD_LIMITS',
          sync: `refused ${NASTY}`,
          balanceBefore: 99000,
          balanceAfter: 98000,
        },
      ],
    },
  });
  return {
    format: 'dt-lab-report',
    version: 1,
    tool: { name: 'dt-lab', version: '0.1.0' },
    startedAt: '2026-11-23T10:00:00.000Z',
    finishedAt: '2026-11-23T10:00:40.000Z',
    host: { hostname: 'lab-host', platform: 'linux-x64', node: 'v20.20.2', cpus: '2 x AMD EPYC' },
    reader: { name: `Virtual PCD 00 00 ${NASTY}`, atr: '3B8A800145445457414C4C4554017F' },
    card: { kid: '00112233445566778899aabbccddeeff', balance: 100000, personalized: true, label: NASTY },
    options: { suites: suites.map((s) => s.name), taps: timing?.taps ?? 0, amount: 100 },
    suites,
    summary: summarize(suites.flatMap((s) => s.cases)),
  };
}

// ---------------------------------------------------------------- a small strict XML parser
/** An element of the parsed document. */
export interface XmlElement {
  readonly name: string;
  readonly attrs: Record<string, string>;
  readonly children: XmlElement[];
  text: string;
}

const NAME = /^[A-Za-z_][A-Za-z0-9._:-]*/;
// eslint-disable-next-line no-control-regex
const FORBIDDEN = /[\u0000-\u0008\u000B\u000C\u000E-\u001F\uFFFE\uFFFF]/;

function decodeEntities(s: string, where: string): string {
  if (FORBIDDEN.test(s)) throw new Error(`character XML 1.0 forbids in ${where}`);
  if (/<|&(?!(amp|lt|gt|quot|apos|#[0-9]+|#x[0-9A-Fa-f]+);)/.test(s))
    throw new Error(`unescaped markup character in ${where}: ${JSON.stringify(s.slice(0, 60))}`);
  return s.replace(/&(amp|lt|gt|quot|apos|#[0-9]+|#x[0-9A-Fa-f]+);/g, (_m, n: string) => {
    const named: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" };
    if (named[n]) return named[n]!;
    const cp = n.startsWith('#x') ? parseInt(n.slice(2), 16) : parseInt(n.slice(1), 10);
    const ch = String.fromCodePoint(cp);
    if (FORBIDDEN.test(ch)) throw new Error(`character reference to a forbidden character in ${where}`);
    return ch;
  });
}

/**
 * Parses an XML document strictly enough for the report tests: one root,
 * balanced tags, quoted unique attributes, only the predefined entities and
 * character references, no forbidden characters. Throws on anything else.
 */
export function parseXml(xml: string): XmlElement {
  const decl = /^<\?xml version="1\.0" encoding="UTF-8"\?>\n/.exec(xml);
  if (!decl) throw new Error('missing XML declaration');
  let i = decl[0].length;
  const stack: XmlElement[] = [];
  let root: XmlElement | undefined;
  while (i < xml.length) {
    const lt = xml.indexOf('<', i);
    const text = xml.slice(i, lt === -1 ? xml.length : lt);
    if (stack.length === 0) {
      if (text.trim() !== '') throw new Error('text outside the root element');
    } else stack[stack.length - 1]!.text += decodeEntities(text, `<${stack[stack.length - 1]!.name}>`);
    if (lt === -1) break;
    i = lt;
    if (xml.startsWith('</', i)) {
      const m = /^<\/([A-Za-z_][A-Za-z0-9._:-]*)\s*>/.exec(xml.slice(i));
      if (!m) throw new Error(`bad end tag at ${i}`);
      const open = stack.pop();
      if (!open || open.name !== m[1]) throw new Error(`</${m[1]}> does not close <${open?.name}>`);
      i += m[0].length;
      continue;
    }
    if (xml.startsWith('<!--', i) || xml.startsWith('<?', i) || xml.startsWith('<!', i)) throw new Error(`unexpected markup at ${i}`);
    i++;
    const nm = NAME.exec(xml.slice(i));
    if (!nm) throw new Error(`bad tag name at ${i}`);
    i += nm[0].length;
    const el: XmlElement = { name: nm[0], attrs: {}, children: [], text: '' };
    for (;;) {
      const ws = /^\s*/.exec(xml.slice(i))![0];
      i += ws.length;
      if (xml.startsWith('/>', i) || xml.startsWith('>', i)) break;
      if (ws.length === 0) throw new Error(`attributes must be separated by white space in <${el.name}>`);
      const am = /^([A-Za-z_][A-Za-z0-9._:-]*)="([^"]*)"/.exec(xml.slice(i));
      if (!am) throw new Error(`bad attribute in <${el.name}> at ${i}: ${JSON.stringify(xml.slice(i, i + 40))}`);
      if (am[1]! in el.attrs) throw new Error(`duplicate attribute ${am[1]} in <${el.name}>`);
      el.attrs[am[1]!] = decodeEntities(am[2]!, `attribute ${am[1]}`);
      i += am[0].length;
    }
    if (stack.length > 0) stack[stack.length - 1]!.children.push(el);
    else if (root) throw new Error('second root element');
    else root = el;
    if (xml.startsWith('/>', i)) i += 2;
    else {
      i += 1;
      stack.push(el);
    }
  }
  if (stack.length > 0) throw new Error(`unclosed <${stack[stack.length - 1]!.name}>`);
  if (!root) throw new Error('no root element');
  return root;
}
