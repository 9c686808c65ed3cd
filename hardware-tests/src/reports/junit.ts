/**
 * JUnit XML report (the format CI systems read): one `<testsuite>` per lab
 * suite, one `<testcase>` per case with classname `dt-lab.<suite>`, times in
 * seconds. Failed cases carry `<failure message>`, errored ones `<error
 * message>`, skipped ones `<skipped message>`; `<system-out>` holds the
 * case's details (JSON) and the path of its APDU transcript.
 *
 * @module
 */
import { summarize, type CaseResult, type LabRun, type SuiteResult } from '../model.ts';
import { escapeAttr, escapeText } from './escape.ts';

/** Seconds with millisecond precision, as JUnit wants them. */
const seconds = (ms: number): string => (Math.max(0, ms) / 1000).toFixed(3);

function systemOut(c: CaseResult): string {
  const lines: string[] = [];
  if (c.details && Object.keys(c.details).length > 0) lines.push(`details: ${JSON.stringify(c.details, null, 2)}`);
  if (c.transcript) lines.push(`transcript: ${c.transcript}`);
  return lines.length ? `      <system-out>${escapeText(lines.join('\n'))}</system-out>\n` : '';
}

function testcase(c: CaseResult, suite: string): string {
  const head = `    <testcase name="${escapeAttr(c.name)}" classname="dt-lab.${escapeAttr(suite)}" time="${seconds(c.durationMs)}"`;
  let body = '';
  const message = c.message ?? '';
  if (c.status === 'failed')
    body += `      <failure message="${escapeAttr(message)}" type="failure">${escapeText(`${c.description}\n${message}`)}</failure>\n`;
  else if (c.status === 'error')
    body += `      <error message="${escapeAttr(message)}" type="error">${escapeText(`${c.description}\n${message}`)}</error>\n`;
  else if (c.status === 'skipped') body += `      <skipped message="${escapeAttr(message)}"/>\n`;
  body += systemOut(c);
  return body ? `${head}>\n${body}    </testcase>\n` : `${head}/>\n`;
}

function testsuite(s: SuiteResult, run: LabRun): string {
  const sum = summarize(s.cases);
  const props: [string, unknown][] = [
    ['reader', run.reader.name],
    ...(run.reader.atr ? [['atr', run.reader.atr] as [string, unknown]] : []),
  ];
  let out =
    `  <testsuite name="${escapeAttr(s.name)}" tests="${sum.total}" failures="${sum.failed}" errors="${sum.errors}" skipped="${sum.skipped}"` +
    ` time="${seconds(s.durationMs)}" timestamp="${escapeAttr(s.startedAt)}" hostname="${escapeAttr(run.host.hostname)}">\n`;
  out += `    <properties>\n${props.map(([k, v]) => `      <property name="${escapeAttr(k)}" value="${escapeAttr(v)}"/>\n`).join('')}    </properties>\n`;
  for (const c of s.cases) out += testcase(c, s.name);
  return `${out}  </testsuite>\n`;
}

/** Renders `run` as JUnit XML (UTF-8, XML 1.0). */
export function renderJunit(run: LabRun): string {
  const all = run.suites.flatMap((s) => s.cases);
  const sum = summarize(all);
  const time = run.suites.reduce((t, s) => t + s.durationMs, 0);
  return (
    '<?xml version="1.0" encoding="UTF-8"?>\n' +
    `<testsuites name="dt-lab" tests="${sum.total}" failures="${sum.failed}" errors="${sum.errors}" skipped="${sum.skipped}" time="${seconds(time)}" timestamp="${escapeAttr(run.startedAt)}">\n` +
    run.suites.map((s) => testsuite(s, run)).join('') +
    '</testsuites>\n'
  );
}
