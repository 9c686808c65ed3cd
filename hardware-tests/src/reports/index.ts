/**
 * The report writers: JUnit XML (`report.xml`), JSON (`report.json`) and a
 * self-contained HTML report (`report.html`), all rendered from one
 * {@link LabRun}.
 *
 * @module
 */
import { renameSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { LabRun } from '../model.ts';
import { renderHtml } from './html.ts';
import { renderJson } from './json.ts';
import { renderJunit } from './junit.ts';
import { makeDirs } from '@dt/protocol/fs';

export { renderHtml } from './html.ts';
export { renderJson } from './json.ts';
export { renderJunit } from './junit.ts';
export { escapeText, escapeAttr, jsonForScript, stripXmlInvalid } from './escape.ts';

/** Paths of the written reports. */
export interface ReportPaths {
  readonly junit: string;
  readonly json: string;
  readonly html: string;
}

/** File names of the reports inside the report directory. */
export const REPORT_FILES = { junit: 'report.xml', json: 'report.json', html: 'report.html' } as const;

/**
 * Writes `report.xml` (JUnit), `report.json` and `report.html` into `dir`
 * (created if missing); returns their paths. Each file is written to a
 * temporary name and renamed into place, so a reader (CI, a browser) never
 * sees a half-written report; everything is rendered before anything is
 * written, so a rendering error leaves the previous reports as they were.
 */
export function writeReports(run: LabRun, dir: string): ReportPaths {
  const rendered = { junit: renderJunit(run), json: renderJson(run), html: renderHtml(run) };
  const root = resolve(dir);
  makeDirs(root);
  const paths = { junit: join(root, REPORT_FILES.junit), json: join(root, REPORT_FILES.json), html: join(root, REPORT_FILES.html) };
  for (const k of ['junit', 'json', 'html'] as const) {
    const tmp = `${paths[k]}.tmp-${process.pid}`;
    try {
      writeFileSync(tmp, rendered[k]);
      renameSync(tmp, paths[k]);
    } catch (err) {
      rmSync(tmp, { force: true });
      throw err;
    }
  }
  return paths;
}
