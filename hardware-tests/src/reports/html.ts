/**
 * HTML report: ONE self-contained file, readable offline in any browser
 * (no network, no external script, style sheet, font or image).
 *
 * - Tables (run header, summary, cases, timing figures, endurance rounds)
 *   are rendered here, so the report reads without JavaScript.
 * - The plots (a latency histogram per phase, and a stacked per-phase
 *   breakdown bar of the mean tap) are drawn as inline SVG by a small inline
 *   script from an embedded JSON block, `<script type="application/json"
 *   id="lab-data">`, escaped so that nothing in the data can end the block.
 *
 * Stable hooks for tests and tools: `section.timing[data-suite-index]`,
 * `svg.histogram[data-phase=<phase>][data-bins=<n>]` with one `rect.bar`
 * per bin (`data-count`), `svg.breakdown` with one `rect.segment[data-phase]`
 * per phase, `#lab-data`, `tr.case.status-<status>`.
 *
 * Every text comes through {@link escapeText}: reader names, ATRs, card
 * facts and messages come from devices.
 *
 * @module
 */
import { PHASE_DESCRIPTIONS, PHASES, summarize, type CaseResult, type LabRun, type SuiteResult, type TimingResult } from '../model.ts';
import { escapeAttr, escapeText, jsonForScript } from './escape.ts';
import { formatTenge } from '@dt/protocol';
import { TAP_GOAL_P95_MS as GOAL_P95_MS } from '../suites/timing.ts';

const e = escapeText;

const PHASE_COLORS: Record<string, string> = {
  select: '#4e79a7',
  request: '#f28e2b',
  cardSigning: '#e15759',
  verification: '#76b7b2',
  journalCommit: '#59a14f',
  total: '#7f6f9f',
  other: '#bab0ac',
};

const CSS = `
:root { color-scheme: light; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; margin: 0 auto; padding: 1.5rem; max-width: 1200px; color: #1d232a; background: #fff; }
h1 { font-size: 1.6rem; margin: 0 0 .25rem; } h2 { font-size: 1.25rem; margin: 2rem 0 .5rem; border-bottom: 2px solid #e3e6ea; padding-bottom: .25rem; } h3 { font-size: 1.05rem; margin: 1.25rem 0 .4rem; }
table { border-collapse: collapse; margin: .4rem 0 1rem; width: 100%; } th, td { border: 1px solid #d6dae0; padding: .3rem .5rem; text-align: left; vertical-align: top; }
th { background: #f3f5f7; font-weight: 600; } td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
table.kv { width: auto; } table.kv th { width: 12rem; }
.badge { display: inline-block; padding: .1rem .55rem; border-radius: 1rem; font-weight: 600; font-size: .85rem; margin-right: .35rem; }
.passed { background: #d9f2dd; color: #135d20; } .failed { background: #fbdada; color: #8a1111; } .error { background: #fde7c8; color: #7a4100; } .skipped { background: #e6e8eb; color: #454c55; } .total { background: #dde7f5; color: #1b3f73; }
tr.case.status-failed td.status { background: #fbdada; } tr.case.status-error td.status { background: #fde7c8; } tr.case.status-passed td.status { background: #e7f6e9; } tr.case.status-skipped td.status { background: #eef0f2; }
td.status { font-weight: 600; white-space: nowrap; } code, pre { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, monospace; font-size: .85rem; }
pre { white-space: pre-wrap; word-break: break-word; margin: .25rem 0; background: #f7f8fa; padding: .4rem; border-radius: 4px; }
details summary { cursor: pointer; color: #3a5a87; } .note { color: #5a626c; font-style: italic; } .muted { color: #6b737c; }
.plots { display: flex; flex-wrap: wrap; gap: 1rem; } figure.plot { margin: 0; border: 1px solid #e3e6ea; border-radius: 6px; padding: .4rem; }
figure.plot figcaption { font-size: .8rem; color: #4b535c; max-width: 360px; }
svg text { font: 11px system-ui, sans-serif; fill: #30363d; } svg .axis { stroke: #6b737c; stroke-width: 1; } svg .marker { stroke-width: 1.5; stroke-dasharray: 4 3; }
svg .marker.p50 { stroke: #1b3f73; } svg .marker.p95 { stroke: #8a1111; } .legend span { display: inline-block; margin-right: 1rem; font-size: .85rem; }
.legend i { display: inline-block; width: .8rem; height: .8rem; margin-right: .3rem; vertical-align: -1px; border-radius: 2px; }
`;

/**
 * The plot script (runs in the browser, offline). Its histogram binning is
 * the same rule as `histogram()` in src/stats.ts: equal-width bins, the
 * square-root rule clamped to 5..40, one bin when all samples are equal.
 */
const SCRIPT = `
(function () {
  'use strict';
  var NS = 'http://www.w3.org/2000/svg';
  var data;
  try { data = JSON.parse(document.getElementById('lab-data').textContent); } catch (err) { return; }
  var colors = data.colors || {};
  function svgEl(name, attrs, parent, text) {
    var n = document.createElementNS(NS, name);
    for (var k in attrs) if (Object.prototype.hasOwnProperty.call(attrs, k)) n.setAttribute(k, String(attrs[k]));
    if (text !== undefined) n.textContent = text;
    if (parent) parent.appendChild(n);
    return n;
  }
  function htmlEl(name, attrs, parent, text) {
    var n = document.createElement(name);
    for (var k in attrs) if (Object.prototype.hasOwnProperty.call(attrs, k)) n.setAttribute(k, String(attrs[k]));
    if (text !== undefined) n.textContent = text;
    if (parent) parent.appendChild(n);
    return n;
  }
  function bins(samples) {
    if (!samples.length) return [];
    var min = Infinity, max = -Infinity, i;
    for (i = 0; i < samples.length; i++) { if (samples[i] < min) min = samples[i]; if (samples[i] > max) max = samples[i]; }
    if (max === min) return [{ lo: min, hi: max, count: samples.length }];
    var k = Math.min(40, Math.max(5, Math.ceil(Math.sqrt(samples.length))));
    var w = (max - min) / k, out = [];
    for (i = 0; i < k; i++) out.push({ lo: min + i * w, hi: i === k - 1 ? max : min + (i + 1) * w, count: 0 });
    for (i = 0; i < samples.length; i++) out[Math.min(k - 1, Math.floor((samples[i] - min) / w))].count++;
    return out;
  }
  function fmt(x) { return x < 10 ? x.toFixed(2) : x < 100 ? x.toFixed(1) : x.toFixed(0); }
  // Keeps a text element whole inside [lo, hi] horizontally: centred on x when it fits, else against the edge.
  function placeLabel(t, x, lo, hi) {
    var w = t.getComputedTextLength ? t.getComputedTextLength() : 0;
    var cx = Math.min(Math.max(x, lo + w / 2), hi - w / 2);
    t.setAttribute('x', cx.toFixed(2));
  }
  // After layout: each label's box, for the report's own layout check (the headless-browser test reads it).
  function stampBoxes(svg) {
    var texts = svg.querySelectorAll('text');
    for (var i = 0; i < texts.length; i++) {
      try {
        var bb = texts[i].getBBox();
        texts[i].setAttribute('data-box', [bb.x, bb.y, bb.width, bb.height].map(function (v) { return v.toFixed(2); }).join(' '));
      } catch (err) { /* not laid out: no box */ }
    }
  }
  function histogram(host, phase, s) {
    var b = bins(s.samples);
    // Rows from the top: the title, the p50 label, the p95 label (each on its own row, so that
    // close percentiles never overlap each other or the title), then the plot; below it the axis labels.
    var W = 360, H = 222, L = 42, R = 12, T = 54, B = 34, pw = W - L - R, ph = H - T - B;
    var ROW_TITLE = 14, ROW_P50 = 30, ROW_P95 = 46;
    var fig = htmlEl('figure', { 'class': 'plot' }, host);
    var svg = svgEl('svg', { 'class': 'histogram', 'data-phase': phase, 'data-bins': b.length, width: W, height: H, viewBox: '0 0 ' + W + ' ' + H, role: 'img', 'aria-label': 'latency histogram of ' + phase }, fig);
    svgEl('text', { 'class': 'title', x: L, y: ROW_TITLE, 'font-weight': 600 }, svg, phase + ' (ms), n = ' + s.n);
    var maxCount = 0, i;
    for (i = 0; i < b.length; i++) if (b[i].count > maxCount) maxCount = b[i].count;
    var lo = b[0].lo, hi = b[b.length - 1].hi, span = hi - lo || 1;
    var bw = pw / b.length;
    for (i = 0; i < b.length; i++) {
      var h = maxCount ? (b[i].count / maxCount) * ph : 0;
      var r = svgEl('rect', { 'class': 'bar', 'data-count': b[i].count, 'data-lo': b[i].lo.toFixed(3), 'data-hi': b[i].hi.toFixed(3), x: (L + i * bw + 0.5).toFixed(2), y: (T + ph - h).toFixed(2), width: Math.max(0.5, bw - 1).toFixed(2), height: h.toFixed(2), fill: colors[phase] || '#4e79a7' }, svg);
      svgEl('title', {}, r, fmt(b[i].lo) + '-' + fmt(b[i].hi) + ' ms: ' + b[i].count + ' taps');
    }
    svgEl('line', { 'class': 'axis', x1: L, y1: T + ph, x2: L + pw, y2: T + ph }, svg);
    svgEl('line', { 'class': 'axis', x1: L, y1: T, x2: L, y2: T + ph }, svg);
    svgEl('text', { 'class': 'axis-label', x: L, y: H - 18, 'text-anchor': 'start' }, svg, fmt(lo));
    svgEl('text', { 'class': 'axis-label', x: L + pw, y: H - 18, 'text-anchor': 'end' }, svg, fmt(hi));
    svgEl('text', { 'class': 'axis-label', x: L + pw / 2, y: H - 4, 'text-anchor': 'middle' }, svg, 'latency, ms');
    svgEl('text', { 'class': 'axis-label', x: L - 4, y: T + 8, 'text-anchor': 'end' }, svg, String(maxCount));
    svgEl('text', { 'class': 'axis-label', x: L - 4, y: T + ph, 'text-anchor': 'end' }, svg, '0');
    [['p50', s.p50, ROW_P50], ['p95', s.p95, ROW_P95]].forEach(function (m) {
      var x = L + ((m[1] - lo) / span) * pw;
      // The dashed line stays inside the plot: it crosses no label row.
      svgEl('line', { 'class': 'marker ' + m[0], x1: x.toFixed(2), y1: T, x2: x.toFixed(2), y2: T + ph }, svg);
      var t = svgEl('text', { 'class': 'marker-label ' + m[0], x: x.toFixed(2), y: m[2], 'text-anchor': 'middle' }, svg, m[0] + ' ' + fmt(m[1]));
      placeLabel(t, x, 0, W);
    });
    stampBoxes(svg);
    htmlEl('figcaption', {}, fig, (data.descriptions && data.descriptions[phase]) || phase);
  }
  function breakdown(host, t) {
    var parts = data.phases.filter(function (p) { return p !== 'total'; });
    var total = t.phases.total ? t.phases.total.mean : 0;
    if (!total) return;
    var segs = parts.map(function (p) { return { phase: p, ms: t.phases[p] ? t.phases[p].mean : 0 }; });
    var sum = segs.reduce(function (a, s) { return a + s.ms; }, 0);
    // The gaps between measured phases (kernel bookkeeping, event loop): what the phases do not cover.
    segs.push({ phase: 'other', ms: Math.max(0, total - sum) });
    var W = 1000, H = 74, L = 10, R = 10, scale = (W - L - R) / Math.max(total, sum);
    var svg = svgEl('svg', { 'class': 'breakdown', 'data-suite-index': t.suiteIndex, width: '100%', viewBox: '0 0 ' + W + ' ' + H, preserveAspectRatio: 'none', role: 'img', 'aria-label': 'mean tap broken down by phase' }, host);
    var x = L;
    segs.forEach(function (s) {
      var w = s.ms * scale;
      var r = svgEl('rect', { 'class': 'segment', 'data-phase': s.phase, 'data-ms': s.ms.toFixed(3), x: x.toFixed(2), y: 8, width: w.toFixed(2), height: 40, fill: colors[s.phase] || '#999' }, svg);
      svgEl('title', {}, r, s.phase + ': ' + fmt(s.ms) + ' ms (' + (100 * s.ms / total).toFixed(1) + ' %)');
      if (w > 60) svgEl('text', { x: (x + w / 2).toFixed(2), y: 33, 'text-anchor': 'middle', fill: '#fff' }, svg, s.phase);
      x += w;
    });
    svgEl('text', { x: L, y: 66 }, svg, 'mean tap ' + fmt(total) + ' ms');
    var legend = htmlEl('div', { 'class': 'legend' }, host);
    segs.forEach(function (s) {
      var sp = htmlEl('span', {}, legend);
      htmlEl('i', { style: 'background:' + (colors[s.phase] || '#999') }, sp);
      sp.appendChild(document.createTextNode(s.phase + ' ' + fmt(s.ms) + ' ms'));
    });
  }
  (data.timing || []).forEach(function (t) {
    var section = document.querySelector('section.timing[data-suite-index="' + t.suiteIndex + '"]');
    if (!section) return;
    var hist = section.querySelector('.histograms');
    var bd = section.querySelector('.breakdown-host');
    data.phases.forEach(function (p) { var s = t.phases[p]; if (s && s.n > 0 && hist) histogram(hist, p, s); });
    if (bd) breakdown(bd, t);
    section.setAttribute('data-plotted', 'true');
  });
})();
`;

const fmtMs = (ms: number): string => (ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(ms < 10 ? 2 : 1)} ms`);
const num = (x: number): string => (Number.isInteger(x) ? String(x) : x.toFixed(3));
const show = (v: unknown): string => (typeof v === 'string' ? v : JSON.stringify(v));

function kv(rows: [string, unknown][]): string {
  return `<table class="kv">${rows.map(([k, v]) => `<tr><th>${e(k)}</th><td>${e(show(v))}</td></tr>`).join('')}</table>`;
}

function badges(s: ReturnType<typeof summarize>): string {
  return (
    `<span class="badge total">${s.total} cases</span><span class="badge passed">${s.passed} passed</span>` +
    `<span class="badge failed">${s.failed} failed</span><span class="badge error">${s.errors} errors</span><span class="badge skipped">${s.skipped} skipped</span>`
  );
}

/** A transcript path is linked only when it is plainly relative (no scheme, not absolute): the report never points off the machine. */
function transcriptLink(path: string | undefined): string {
  if (!path) return '<span class="muted">none</span>';
  const safe = /^[A-Za-z0-9._~\-/]+$/.test(path) && !path.startsWith('/') && !path.startsWith('//');
  return safe ? `<a href="${escapeAttr(path)}">${e(path)}</a>` : `<code>${e(path)}</code>`;
}

function caseRow(c: CaseResult): string {
  const details =
    c.details && Object.keys(c.details).length > 0
      ? `<details><summary>details</summary><pre>${e(JSON.stringify(c.details, null, 2))}</pre></details>`
      : '';
  return (
    `<tr class="case status-${escapeAttr(c.status)}" data-case="${escapeAttr(c.name)}">` +
    `<td class="status">${e(c.status)}</td><td><code>${e(c.name)}</code><div class="muted">${e(c.description)}</div></td>` +
    `<td class="num">${e(fmtMs(c.durationMs))}</td><td>${c.message ? `<pre>${e(c.message)}</pre>` : ''}${details}</td><td>${transcriptLink(c.transcript)}</td></tr>`
  );
}

function timingSection(t: TimingResult, index: number): string {
  const rows = PHASES.map((p) => {
    const s = t.phases[p];
    return `<tr data-phase="${p}"><th title="${escapeAttr(PHASE_DESCRIPTIONS[p])}"><i style="display:inline-block;width:.7rem;height:.7rem;background:${PHASE_COLORS[p]};margin-right:.35rem"></i>${e(p)}</th>${[s.n, s.min, s.mean, s.p50, s.p95, s.p99, s.max].map((x) => `<td class="num">${num(x)}</td>`).join('')}</tr>`;
  }).join('');
  const total = t.phases.total;
  // The goal is informational (suites/timing.ts says why): the text says so, so that "not met" next to a passed case is no contradiction.
  const goal =
    total.n > 0
      ? `<p class="goal">Latency goal (informational, not part of the verdict: the tap-latency case passes when every tap is approved): p95 tap-to-outcome &lt; ${GOAL_P95_MS} ms: <strong>${total.p95 < GOAL_P95_MS ? 'met' : 'not met'}</strong> (p95 ${num(total.p95)} ms over ${total.n} taps).</p>`
      : '<p class="note">No approved taps: no latency figures.</p>';
  const extra: string[] = [`${t.approved} of ${t.taps} taps approved, ${formatTenge(t.amount)} each`];
  if (t.syncs !== undefined) extra.push(`${t.syncs} card sync(s) when the card's offline limits were reached (not timed)`);
  if (t.stoppedEarly) extra.push(`stopped early: ${t.stoppedEarly}`);
  return (
    `<section class="timing" data-suite-index="${index}"><h3>Tap latency per phase (ms)</h3><p>${e(extra.join('; '))}.</p>${goal}` +
    `<table class="phases"><thead><tr><th>phase</th><th class="num">n</th><th class="num">min</th><th class="num">mean</th><th class="num">p50</th><th class="num">p95</th><th class="num">p99</th><th class="num">max</th></tr></thead><tbody>${rows}</tbody></table>` +
    `<details><summary>what each phase covers</summary><ul>${PHASES.map((p) => `<li><b>${e(p)}</b>: ${e(PHASE_DESCRIPTIONS[p])}</li>`).join('')}</ul></details>` +
    (total.n > 0
      ? `<h3>Per-phase breakdown of the mean tap</h3><div class="breakdown-host"></div><h3>Latency histograms</h3><div class="plots histograms"></div>` +
        '<noscript><p class="note">The plots are drawn by the report\'s inline script; the tables above hold the same figures.</p></noscript>'
      : '') +
    '</section>'
  );
}

function suiteSection(s: SuiteResult, index: number): string {
  const sum = summarize(s.cases);
  let out = `<section class="suite" id="suite-${escapeAttr(s.name)}-${index}" data-suite="${escapeAttr(s.name)}"><h2>Suite: ${e(s.name)}</h2>`;
  out += `<p>${badges(sum)} <span class="muted">started ${e(s.startedAt)}, ${e(fmtMs(s.durationMs))}</span></p>`;
  out += `<table class="cases"><thead><tr><th>status</th><th>case</th><th class="num">time</th><th>message / details</th><th>transcript</th></tr></thead><tbody>${s.cases.map(caseRow).join('')}</tbody></table>`;
  if (s.timing) out += timingSection(s.timing, index);
  if (s.endurance) {
    out += '<h3>Endurance rounds</h3>';
    out +=
      s.endurance.rounds.length === 0
        ? '<p class="note">No rounds ran.</p>'
        : '<table class="endurance"><thead><tr><th class="num">round</th><th class="num">payments</th><th class="num">paid</th><th>stopped by</th><th>sync</th><th class="num">balance before</th><th class="num">balance after</th></tr></thead><tbody>' +
          s.endurance.rounds
            .map(
              (r) =>
                `<tr><td class="num">${r.round}</td><td class="num">${r.payments}</td><td class="num">${formatTenge(r.paid)}</td><td>${e(r.stoppedBy)}</td><td>${e(r.sync)}</td><td class="num">${formatTenge(r.balanceBefore)}</td><td class="num">${formatTenge(r.balanceAfter)}</td></tr>`,
            )
            .join('') +
          '</tbody></table>';
  }
  return `${out}</section>`;
}

/** Renders `run` as one self-contained HTML document. */
export function renderHtml(run: LabRun): string {
  const all = run.suites.flatMap((s) => s.cases);
  const sum = summarize(all);
  const timing = run.suites.flatMap((s, i) =>
    s.timing
      ? [
          {
            suite: s.name,
            suiteIndex: i,
            taps: s.timing.taps,
            approved: s.timing.approved,
            amount: s.timing.amount,
            phases: s.timing.phases,
          },
        ]
      : [],
  );
  const data = { phases: PHASES, descriptions: PHASE_DESCRIPTIONS, colors: PHASE_COLORS, timing };
  const durationMs = Date.parse(run.finishedAt) - Date.parse(run.startedAt);
  const header: [string, unknown][] = [
    ['reader', run.reader.name],
    ['ATR', run.reader.atr ?? 'unknown'],
    ['started', run.startedAt],
    ['finished', run.finishedAt],
    ...(Number.isFinite(durationMs) ? [['duration', fmtMs(durationMs)] as [string, unknown]] : []),
    ['host', `${run.host.hostname} (${run.host.platform}, node ${run.host.node}, ${run.host.cpus})`],
    ['tool', `${run.tool.name} ${run.tool.version}`],
  ];
  const card =
    run.card && Object.keys(run.card).length > 0
      ? `<h3>Card</h3>${kv(Object.entries(run.card))}`
      : '<p class="note">The card told nothing about itself (no SELECT/GET STATUS facts recorded).</p>';
  const options = Object.keys(run.options).length > 0 ? `<h3>Options</h3>${kv(Object.entries(run.options))}` : '';
  const noTiming =
    timing.length === 0
      ? '<p class="note" id="no-timing">The timing suite did not run in this lab run: there are no latency plots.</p>'
      : '';
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:">
<title>dt-lab report: ${e(run.reader.name)} (${e(run.startedAt)})</title>
<style>${CSS}</style>
</head>
<body>
<header><h1>dt-lab report</h1><p class="muted">DT offline POS lab suite: ${e(run.suites.map((s) => s.name).join(', ') || 'no suites')}</p>
${kv(header)}${card}${options}</header>
<section id="summary"><h2>Summary</h2><p>${badges(sum)}</p>
<table class="suites"><thead><tr><th>suite</th><th class="num">cases</th><th class="num">passed</th><th class="num">failed</th><th class="num">errors</th><th class="num">skipped</th><th class="num">time</th></tr></thead><tbody>
${run.suites
  .map((s, i) => {
    const x = summarize(s.cases);
    return `<tr><td><a href="#suite-${escapeAttr(s.name)}-${i}">${e(s.name)}</a></td><td class="num">${x.total}</td><td class="num">${x.passed}</td><td class="num">${x.failed}</td><td class="num">${x.errors}</td><td class="num">${x.skipped}</td><td class="num">${e(fmtMs(s.durationMs))}</td></tr>`;
  })
  .join('\n')}
</tbody></table>${noTiming}</section>
${run.suites.map(suiteSection).join('\n')}
<script type="application/json" id="lab-data">${jsonForScript(data)}</script>
<script>${SCRIPT}</script>
</body>
</html>
`;
}
