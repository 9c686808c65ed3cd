/**
 * The three report formats from hand-built lab runs (every status, hostile
 * text) and from real timing data: JUnit XML well-formed (strict parser) with
 * counts matching summarize, escaping, HTML self-contained and escaped, JSON
 * round trip, atomic writes.
 */
import test from 'ava';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { InProcessTransport } from '@dt/card-applet-sim';
import { TransportReader } from '@dt/terminal';
import { PHASES, summarize, type Phase, type PhaseStats, type TimingResult } from '../src/model.ts';
import { phaseStats } from '../src/stats.ts';
import {
  escapeAttr,
  escapeText,
  jsonForScript,
  renderHtml,
  renderJson,
  renderJunit,
  stripXmlInvalid,
  writeReports,
} from '../src/reports/index.ts';
import { timeTaps } from '../src/timing.ts';
import { startLabWorld } from '../bench/lab-world.ts';
import { NASTY, handRun, parseXml, syntheticTiming, type XmlElement } from './reports-fixture.ts';

const kids = (el: XmlElement, name: string) => el.children.filter((c) => c.name === name);
const clean = (s: string) => stripXmlInvalid(s);

// ---------------------------------------------------------------- escaping
test('escaping: markup characters, quotes, forbidden XML characters, lone surrogates', (t) => {
  t.is(escapeText(`<a href="x">&'`), '&lt;a href=&quot;x&quot;&gt;&amp;&apos;');
  t.is(stripXmlInvalid('a\u0000b\u0001c\u0008d\u000be\u000cf\u001fg\ufffeh\uffffi'), 'abcdefghi');
  // Tab, LF, CR are allowed; a surrogate PAIR is kept, lone halves are dropped.
  t.is(stripXmlInvalid('x\ty\nz\r😀\ud800\udc00!\ud800?\udc00.'), 'x\ty\nz\r😀\ud800\udc00!?.');
  t.is(escapeAttr('line1\nline2\tx'), 'line1&#10;line2&#9;x');
  const data = { s: '</script><!-- & \u2028 >' };
  const json = jsonForScript(data);
  t.false(/<|>|&|\u2028/.test(json));
  t.deepEqual(JSON.parse(json), data);
});

test('the strict XML checker itself refuses what it must', (t) => {
  const decl = '<?xml version="1.0" encoding="UTF-8"?>\n';
  t.notThrows(() => parseXml(`${decl}<a x="1"><b/>t&amp;t</a>\n`));
  t.throws(() => parseXml(`${decl}<a>&</a>`));
  t.throws(() => parseXml(`${decl}<a>x\u0001</a>`));
  t.throws(() => parseXml(`${decl}<a x="<"/>`));
  t.throws(() => parseXml(`${decl}<a><b></a></b>`));
  t.throws(() => parseXml(`${decl}<a x="1" x="2"/>`));
  t.throws(() => parseXml(`${decl}<a/><b/>`));
  t.throws(() => parseXml('<a/>'));
});

// ---------------------------------------------------------------- JUnit
test('JUnit: well-formed, counts match summarize, statuses and escaping', (t) => {
  const run = handRun(syntheticTiming());
  const xml = renderJunit(run);
  const root = parseXml(xml);
  t.is(root.name, 'testsuites');
  const all = summarize(run.suites.flatMap((s) => s.cases));
  t.like(root.attrs, { tests: String(all.total), failures: String(all.failed), errors: String(all.errors), skipped: String(all.skipped) });
  const suites = kids(root, 'testsuite');
  t.deepEqual(
    suites.map((s) => s.attrs.name),
    run.suites.map((s) => s.name),
  );
  for (const [i, s] of suites.entries()) {
    const r = run.suites[i]!;
    const sum = summarize(r.cases);
    t.like(s.attrs, {
      tests: String(sum.total),
      failures: String(sum.failed),
      errors: String(sum.errors),
      skipped: String(sum.skipped),
      timestamp: r.startedAt,
    });
    t.is(Number(s.attrs.time), r.durationMs / 1000);
    const cases = kids(s, 'testcase');
    t.is(cases.length, r.cases.length);
    for (const [j, tc] of cases.entries()) {
      const c = r.cases[j]!;
      t.is(tc.attrs.classname, `dt-lab.${r.name}`);
      t.is(tc.attrs.name, clean(c.name));
      t.true(Math.abs(Number(tc.attrs.time) - c.durationMs / 1000) < 0.001);
      const verdict = tc.children.map((x) => x.name).filter((n) => n !== 'system-out');
      const expected = { passed: [], failed: ['failure'], error: ['error'], skipped: ['skipped'] }[c.status];
      t.deepEqual(verdict, expected, `${r.name}/${c.name}`);
      if (c.status !== 'passed') t.is(tc.children.find((x) => x.name === verdict[0])!.attrs.message, clean(c.message ?? ''));
      const out = kids(tc, 'system-out')[0];
      if (c.transcript) t.true(out!.text.includes(`transcript: ${c.transcript}`));
      if (c.details) t.true(out!.text.includes('details:'));
    }
  }
  // Hostile text survives as text (minus the characters XML cannot carry), never as markup.
  const conf = suites[0]!;
  const failure = kids(kids(conf, 'testcase')[1]!, 'failure')[0]!;
  t.is(failure.attrs.message, clean(`expected SW 6E00, got 9000 ${NASTY}`));
  t.true(failure.text.includes(clean(NASTY)));
  t.false(xml.includes('<b>'));
  t.false(xml.includes('\u0001'));
  t.is(kids(suites[0]!, 'properties')[0]!.children[0]!.attrs.value, clean(run.reader.name));
});

// ---------------------------------------------------------------- JSON
test('JSON: the LabRun round-trips, pretty with a trailing newline', (t) => {
  const run = handRun(syntheticTiming(25));
  const json = renderJson(run);
  t.true(json.endsWith('}\n'));
  t.true(json.includes('\n  "format": "dt-lab-report"'));
  t.deepEqual(JSON.parse(json), run);
});

// ---------------------------------------------------------------- HTML
function labData(html: string): {
  phases: string[];
  timing: { suiteIndex: number; phases: Record<string, { samples: number[]; n: number }> }[];
} {
  const m = /<script type="application\/json" id="lab-data">([\s\S]*?)<\/script>/.exec(html);
  if (!m) throw new Error('no lab-data block');
  return JSON.parse(m[1]!);
}

test('HTML: self-contained (nothing fetched), everything escaped, data block parses', (t) => {
  const run = handRun(syntheticTiming());
  const html = renderHtml(run);
  t.true(html.startsWith('<!DOCTYPE html>'));
  // Nothing that a browser would fetch: no external scripts, styles, fonts, images or frames.
  t.false(/<link\b|<iframe\b|<img\b|<object\b|<embed\b|@import|url\(/i.test(html));
  t.false(/\bsrc\s*=/i.test(html.replace(/src=["']data:/gi, '')));
  for (const m of html.matchAll(/\bhref\s*=\s*"([^"]*)"/gi)) t.false(/^[a-z][a-z0-9+.-]*:|^\/\//i.test(m[1]!), `external href ${m[1]}`);
  // The only "http" is the SVG namespace identifier the script passes to createElementNS (never fetched).
  t.deepEqual(
    [...html.matchAll(/https?:[^'"\s<]*/g)].map((m) => m[0]).filter((u) => u !== 'http://www.w3.org/2000/svg'),
    ['https://evil.example/x'],
  );
  // ...and that hostile transcript "path" is shown as text, not linked.
  t.true(html.includes('<code>https://evil.example/x</code>'));
  t.true(html.includes('<a href="transcripts/conformance/select-dt-applet.apdu">'));
  // Hostile text: escaped everywhere; it cannot close the scripts or open a comment.
  t.false(html.includes(`<b>&"'`));
  t.is(html.split('</script>').length - 1, 2);
  t.false(html.includes('<!--'));
  // eslint-disable-next-line no-control-regex -- looks for the control characters the report must not contain
  t.false(/[\u0001\u0008\u000b\u001b\uffff]/.test(html));
  t.true(html.includes('&lt;b&gt;&amp;&quot;&apos;&lt;/b&gt;'));
  // Tables: one row per case with its status class; the endurance rounds; the phase table.
  const all = summarize(run.suites.flatMap((s) => s.cases));
  t.is(html.split('<tr class="case status-').length - 1, all.total);
  t.is(html.split('<tr class="case status-failed"').length - 1, all.failed);
  t.is(html.split('<tr class="case status-skipped"').length - 1, all.skipped);
  t.regex(html, /<table class="endurance">[\s\S]*?(<tr><td class="num">[12]<\/td>[\s\S]*?){2}<\/tbody>/);
  for (const p of PHASES) t.true(html.includes(`<tr data-phase="${p}">`), p);
  t.true(html.includes('<section class="timing" data-suite-index="2">'));
  t.regex(
    html,
    /Latency goal \(informational, not part of the verdict: the tap-latency case passes when every tap is approved\): p95 tap-to-outcome &lt; 150 ms: <strong>met<\/strong>/,
  );
  t.regex(html, /\d+ of \d+ taps approved, 1\.00 KZT each/);
  // The data block carries every sample of every phase.
  const data = labData(html);
  t.deepEqual(data.phases, [...PHASES]);
  t.is(data.timing.length, 1);
  t.is(data.timing[0]!.suiteIndex, 2);
  for (const p of PHASES) t.deepEqual(data.timing[0]!.phases[p]!.samples, run.suites[2]!.timing!.phases[p].samples);
});

test('HTML: a passed timing case whose p95 misses the goal says the goal is informational, so verdict and text agree', (t) => {
  const slow = syntheticTiming(100);
  // Three times slower: p95 far above 150 ms, every tap still approved.
  const samples = Object.fromEntries(PHASES.map((p) => [p, slow.phases[p].samples.map((v) => v * 3)])) as Record<Phase, number[]>;
  const timing: TimingResult = {
    ...slow,
    phases: Object.fromEntries(PHASES.map((p) => [p, phaseStats(samples[p])])) as Record<Phase, PhaseStats>,
  };
  t.true(timing.phases.total.p95 > 150);
  const run = handRun(timing);
  const tap = run.suites.flatMap((x) => x.cases).find((c) => c.suite === 'timing');
  t.is(tap?.status, 'passed');
  const html = renderHtml(run);
  const goal = /<p class="goal">([\s\S]*?)<\/p>/.exec(html)?.[1] ?? '';
  t.regex(goal, /^Latency goal \(informational, not part of the verdict/);
  t.regex(goal, /<strong>not met<\/strong>/);
  t.is(html.split('not met').length - 1, 1, '"not met" appears once, in the labelled line');
});

test('HTML: readable when the timing suite did not run (a note, no plots)', (t) => {
  const html = renderHtml(handRun());
  t.true(html.includes('id="no-timing"'));
  t.false(html.includes('<section class="timing"'));
  t.deepEqual(labData(html).timing, []);
  t.true(html.includes('<table class="endurance">'));
});

test('HTML: a timing suite without approved taps shows the table and a note, no plot hosts', (t) => {
  const base = syntheticTiming(5);
  const empty: TimingResult = {
    ...base,
    approved: 0,
    phases: Object.fromEntries(PHASES.map((p) => [p, phaseStats([])])) as Record<Phase, PhaseStats>,
  };
  const html = renderHtml(handRun(empty));
  t.true(html.includes('No approved taps'));
  t.false(html.includes('class="plots histograms"'));
});

// ---------------------------------------------------------------- writing
test('writeReports: three files, atomically, in a new directory; overwrites', (t) => {
  const dir = join(mkdtempSync(join(tmpdir(), 'dt-lab-reports-')), 'nested', 'out');
  try {
    const run = handRun(syntheticTiming(10));
    const paths = writeReports(run, dir);
    t.deepEqual(paths, { junit: join(dir, 'report.xml'), json: join(dir, 'report.json'), html: join(dir, 'report.html') });
    t.is(readFileSync(paths.junit, 'utf8'), renderJunit(run));
    t.is(readFileSync(paths.json, 'utf8'), renderJson(run));
    t.is(readFileSync(paths.html, 'utf8'), renderHtml(run));
    t.deepEqual(readdirSync(dir).sort(), ['report.html', 'report.json', 'report.xml']);
    const again = handRun();
    writeReports(again, dir);
    t.deepEqual(JSON.parse(readFileSync(paths.json, 'utf8')), again);
    t.deepEqual(readdirSync(dir).sort(), ['report.html', 'report.json', 'report.xml']);
  } finally {
    rmSync(join(dir, '..', '..'), { recursive: true, force: true });
  }
  t.false(existsSync(dir));
});

test('reports from real timing data (timeTaps on a firmware card)', async (t) => {
  const world = await startLabWorld({
    limits: { perPayment: 1_000_000, offlineTotal: 4_000_000, offlineCount: 10, cvmLimit: 1_000_000 },
    load: 100_000,
  });
  try {
    const card = await world.newCard();
    const timing = await timeTaps({
      reader: new TransportReader('lab', new InProcessTransport(card.card)),
      terminal: world.newTerminal('reports'),
      taps: 12,
      amount: 100,
      ledgerUrl: world.ledgerUrl,
    });
    t.is(timing.approved, 12);
    const run = handRun(timing);
    const root = parseXml(renderJunit(run));
    const ts = kids(root, 'testsuite').find((s) => s.attrs.name === 'timing')!;
    t.is(kids(ts, 'testcase')[0]!.attrs.classname, 'dt-lab.timing');
    const data = labData(renderHtml(run));
    for (const p of PHASES) {
      t.is(data.timing[0]!.phases[p]!.n, 12);
      t.deepEqual(data.timing[0]!.phases[p]!.samples, timing.phases[p].samples);
    }
    t.deepEqual(JSON.parse(renderJson(run)).suites[2].timing, JSON.parse(JSON.stringify(timing)));
  } finally {
    await world.close();
  }
});
