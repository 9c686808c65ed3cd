/**
 * What the ledger's bench scripts (headline.ts, floor.ts) share: their command line (strict
 * options, `--help` on stdout with exit 0, bad usage as `<name>: <reason>`, the help, exit 2)
 * and their cleanup.
 *
 * @module
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';

type Options = NonNullable<ParseArgsConfig['options']>;

/** A bench script's command line, parsed against `options` (plus `--help`), and its `usage` exit. */
export function benchArgs<const O extends Options>(name: string, help: string, options: O) {
  const usage = (message: string): never => {
    process.stderr.write(`${name}: ${message}\n\n${help}`);
    process.exit(2);
  };
  let values: Record<string, string | boolean | (string | boolean)[] | undefined>;
  try {
    values = parseArgs({ options: { ...options, help: { type: 'boolean', short: 'h' } }, strict: true }).values;
  } catch (e) {
    return usage((e as Error).message);
  }
  if (values.help === true) {
    process.stdout.write(help);
    process.exit(0);
  }
  /** `--name`'s value as an integer of at least `min` (`def` when absent); anything else is bad usage. */
  const int = (v: string | undefined, option: string, def: number, min: number): number => {
    if (v === undefined) return def;
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) usage(`--${option} must be an integer >= ${min}, got ${v}`);
    return n;
  };
  return { values: values as { [K in keyof O]?: O[K]['type'] extends 'boolean' ? boolean : string }, usage, int };
}

/** Runs `closers` last first, each once whatever the others do; a failure is logged, not thrown (the run's own error stays the one reported). */
export async function closeAll(closers: readonly (() => unknown)[], log: (line: string) => void): Promise<void> {
  for (const c of [...closers].reverse()) {
    try {
      await c();
    } catch (e) {
      log(`cleanup: ${(e as Error).message}`);
    }
  }
}
