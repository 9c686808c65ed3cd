/**
 * The suite registry of `dt-lab run`: suite name -> suite, in the default
 * order of {@link SUITE_NAMES}.
 *
 * @module
 */
import { SUITE_NAMES, type SuiteName } from '../model.ts';
import type { LabSuite } from '../suite.ts';
import { conformance } from './conformance.ts';
import { robustness } from './robustness.ts';
import { timing } from './timing.ts';
import { endurance } from './endurance.ts';

/** Every suite by name. */
export const SUITES: Readonly<Record<SuiteName, LabSuite>> = { conformance, robustness, timing, endurance };

/** The suites named (default: all, in the default order). */
export function suitesByName(names: readonly SuiteName[] = SUITE_NAMES): LabSuite[] {
  return names.map((n) => SUITES[n]);
}

export { conformance, robustness, timing, endurance };
