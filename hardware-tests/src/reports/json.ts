/**
 * JSON report: the {@link LabRun} as it is (its field names are the format),
 * pretty-printed with a trailing newline.
 *
 * @module
 */
import type { LabRun } from '../model.ts';

/** Renders `run` as JSON. */
export function renderJson(run: LabRun): string {
  return JSON.stringify(run, null, 2) + '\n';
}
