/**
 * The HTML report in a real browser: headless Chromium loads report.html
 * from disk (file://, offline), runs its inline script, and the dumped DOM
 * must hold one histogram per phase whose bars match the binning of the
 * samples, and the per-phase breakdown; a screenshot must be a real page.
 *
 * The browser is found as chromium / chromium-browser / google-chrome(-stable)
 * on PATH (or $CHROMIUM_BIN). Without one the test is skipped locally, with
 * the reason, and FAILS when CI=true (CI installs it: scripts/install-system.sh).
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { PHASES } from '../src/model.ts';
import { writeReports } from '../src/reports/index.ts';
import { histogram } from '../src/stats.ts';
import { handRun, syntheticTiming } from './reports-fixture.ts';

const run = promisify(execFile);

function findBrowser(): string | undefined {
  const fromEnv = process.env.CHROMIUM_BIN;
  if (fromEnv && existsSync(fromEnv)) return fromEnv;
  const dirs = (process.env.PATH ?? '').split(delimiter).filter(Boolean);
  for (const name of ['chromium', 'chromium-browser', 'google-chrome', 'google-chrome-stable']) {
    for (const d of dirs) if (existsSync(join(d, name))) return join(d, name);
  }
  return undefined;
}

const browser = findBrowser();
const inCi = process.env.CI === 'true';
const missing =
  'no Chromium found (chromium, chromium-browser, google-chrome on PATH or $CHROMIUM_BIN); install it with scripts/install-system.sh';

/** Runs headless Chromium on `file` with `args`, in a throw-away profile; returns stdout. */
async function chromium(file: string, args: string[]): Promise<string> {
  const profile = mkdtempSync(join(tmpdir(), 'dt-lab-chromium-'));
  try {
    const { stdout } = await run(
      browser!,
      [
        '--headless=new',
        '--no-sandbox',
        '--disable-gpu',
        '--no-first-run',
        `--user-data-dir=${profile}`,
        ...args,
        pathToFileURL(file).href,
      ],
      { timeout: 90_000, maxBuffer: 32 * 1024 * 1024 },
    );
    return stdout;
  } finally {
    rmSync(profile, { recursive: true, force: true });
  }
}

/** Attributes of a start tag. */
function attrs(tag: string): Record<string, string> {
  return Object.fromEntries([...tag.matchAll(/([\w:-]+)="([^"]*)"/g)].map((m) => [m[1]!, m[2]!]));
}

if (!browser && !inCi) {
  test.skip(`HTML report in headless Chromium (skipped: ${missing})`, () => {});
} else {
  test('HTML report in headless Chromium: histograms per phase, bars match the bins, labels inside and not overlapping, breakdown, screenshot', async (t) => {
    if (!browser) return t.fail(`CI=true but ${missing}`);
    const dir = mkdtempSync(join(tmpdir(), 'dt-lab-html-'));
    try {
      const timing = syntheticTiming(200);
      const paths = writeReports(handRun(timing), join(dir, 'with-timing'));
      const dom = await chromium(paths.html, ['--dump-dom']);
      // The inline script ran.
      t.regex(dom, /<section class="timing" data-suite-index="2" data-plotted="true">/);
      const svgs = [...dom.matchAll(/(<svg class="histogram"[^>]*>)([\s\S]*?)<\/svg>/g)];
      t.deepEqual(
        svgs.map((m) => attrs(m[1]!)['data-phase']),
        [...PHASES],
        'one histogram per phase, in order',
      );
      for (const m of svgs) {
        const a = attrs(m[1]!);
        const phase = a['data-phase'] as (typeof PHASES)[number];
        const expected = histogram(timing.phases[phase].samples);
        const bars = [...m[2]!.matchAll(/<rect class="bar"[^>]*>/g)].map((b) => attrs(b[0]));
        t.is(Number(a['data-bins']), expected.length, `${phase}: bins`);
        t.is(bars.length, expected.length, `${phase}: one bar per bin`);
        t.deepEqual(
          bars.map((b) => Number(b['data-count'])),
          expected.map((b) => b.count),
          `${phase}: bar counts`,
        );
        t.is(
          bars.reduce((s, b) => s + Number(b['data-count']), 0),
          200,
          `${phase}: every tap in a bar`,
        );
        for (const b of bars) t.is(Number(b.height) > 0, Number(b['data-count']) > 0, `${phase}: a bar is drawn iff its bin holds taps`);
        // The tallest bar is the fullest bin.
        const tallest = bars.reduce((x, y) => (Number(y.height) > Number(x.height) ? y : x));
        t.is(Number(tallest['data-count']), Math.max(...expected.map((b) => b.count)));
        t.regex(m[2]!, /class="marker p50"/);
        t.regex(m[2]!, /class="marker p95"/);
        // Labels as Chromium laid them out: each whole inside the plot's box, no two overlapping.
        const [, , vw, vh] = (a.viewBox ?? '').split(' ').map(Number) as [number, number, number, number];
        const labels = [...m[2]!.matchAll(/<text [^>]*>[^<]*<\/text>/g)].map((x) => ({
          text: x[0].replace(/<[^>]+>/g, ''),
          box: attrs(x[0])['data-box'],
        }));
        t.true(labels.length >= 8, `${phase}: title, axis labels and both percentile labels`);
        const boxes = labels.map((l) => {
          t.truthy(l.box, `${phase}: "${l.text}" was laid out`);
          const [x, y, w, h] = (l.box ?? '0 0 0 0').split(' ').map(Number) as [number, number, number, number];
          return { text: l.text, x, y, w, h };
        });
        for (const b of boxes)
          t.true(
            b.w > 0 && b.x >= 0 && b.y >= 0 && b.x + b.w <= vw + 0.01 && b.y + b.h <= vh + 0.01,
            `${phase}: "${b.text}" inside the plot (${b.x}, ${b.y}, ${b.w}, ${b.h})`,
          );
        for (let i = 0; i < boxes.length; i++) {
          for (let j = i + 1; j < boxes.length; j++) {
            const p = boxes[i]!;
            const q = boxes[j]!;
            const overlap = p.x < q.x + q.w && q.x < p.x + p.w && p.y < q.y + q.h && q.y < p.y + p.h;
            t.false(overlap, `${phase}: labels "${p.text}" and "${q.text}" overlap`);
          }
        }
      }
      const bd = /<svg class="breakdown"[^>]*>([\s\S]*?)<\/svg>/.exec(dom);
      t.truthy(bd, 'breakdown drawn');
      const segs = [...bd![1]!.matchAll(/<rect class="segment"[^>]*>/g)].map((s) => attrs(s[0]));
      t.deepEqual(
        segs.map((s) => s['data-phase']),
        ['select', 'request', 'cardSigning', 'verification', 'journalCommit', 'other'],
      );
      for (const s of segs.slice(0, 5)) t.true(Number(s.width) > 0, `${s['data-phase']} segment has width`);
      // Segments are laid side by side in order.
      for (let i = 1; i < segs.length; i++)
        t.true(Math.abs(Number(segs[i]!.x) - (Number(segs[i - 1]!.x) + Number(segs[i - 1]!.width))) < 0.02);

      // Without the timing suite: a note, no plots, and the page still renders.
      const plain = writeReports(handRun(), join(dir, 'no-timing'));
      const dom2 = await chromium(plain.html, ['--dump-dom']);
      t.regex(dom2, /id="no-timing"/);
      t.false(dom2.includes('class="histogram"'));
      t.regex(dom2, /<table class="endurance">/);

      // A screenshot of the whole report: a real PNG of the window size, not a blank page.
      const png = join(dir, 'report.png');
      await chromium(paths.html, ['--hide-scrollbars', '--window-size=1280,2000', `--screenshot=${png}`]);
      const bytes = readFileSync(png);
      t.deepEqual([...bytes.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
      t.is(bytes.readUInt32BE(16), 1280);
      t.is(bytes.readUInt32BE(20), 2000);
      t.true(bytes.length > 50_000, `screenshot of ${bytes.length} bytes: a blank page of that size compresses to ~12 KB`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}
