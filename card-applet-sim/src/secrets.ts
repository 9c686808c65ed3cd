/**
 * What a command line needs to take a card's secrets without showing them: `--pin-stdin` (every
 * secret from stdin, one a line), `--<secret>-env NAME`, and, discouraged, `--<secret> <digits>`;
 * and the usage error (exit 2) its mistakes raise. Shared by `dt-card personalize` and the
 * `dt-bank` / `dt-wallet` commands, so each takes a PIN the same way and says the same things.
 *
 * @module
 */
import { readSync } from 'node:fs';
import type { Command } from 'commander';

/** A command-line mistake: exit 2. */
export class UsageError extends Error {
  /** Builds the error. */
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

/** A secret a command needs: its option stem (`pin` gives `--pin`, `--pin-env`) and what it is called. */
export interface SecretSpec {
  /** Option stem: `pin`, `puk` or `new-pin`. */
  readonly option: 'pin' | 'puk' | 'new-pin';
  /** What it is, for messages (never its value). */
  readonly label: string;
  /** Its form: 4..12 or 8..16 digits. */
  readonly pattern: RegExp;
  readonly form: string;
}

/** The PIN, the unblock code and a new PIN. */
export const PIN: SecretSpec = { option: 'pin', label: 'the PIN', pattern: /^[0-9]{4,12}$/, form: '4..12 digits' };
export const PUK: SecretSpec = { option: 'puk', label: 'the unblock code (PUK)', pattern: /^[0-9]{8,16}$/, form: '8..16 digits' };
export const NEW_PIN: SecretSpec = { option: 'new-pin', label: 'the new PIN', pattern: /^[0-9]{4,12}$/, form: '4..12 digits' };

/** Most bytes read from stdin for secrets: a few lines of digits. */
const SECRETS_MAX = 1024;

const camel = (s: string): string => s.replace(/-([a-z])/g, (_m, c: string) => c.toUpperCase());

/**
 * Adds the ways to give the secrets of `specs` to a command: `--pin-stdin` (all of them
 * from stdin, one a line, in the order of `specs`), `--<secret>-env <NAME>` (from an
 * environment variable) and, discouraged, `--<secret> <digits>` (visible to other users in
 * the process list).
 */
export function secretOptions(c: Command, specs: readonly SecretSpec[]): Command {
  c.option(
    '--pin-stdin',
    `read ${specs.map((s) => s.label).join(', then ')} from stdin, one a line (recommended; e.g. a pipe from a password manager)`,
  );
  for (const s of specs) c.option(`--${s.option}-env <NAME>`, `read ${s.label} from the environment variable NAME`);
  for (const s of specs)
    c.option(
      `--${s.option} <digits>`,
      `${s.label} (${s.form}) on the command line: DISCOURAGED, other users can read it in the process list`,
    );
  return c;
}

/** Reads at most {@link SECRETS_MAX} bytes of stdin until its end. */
function readStdin(): string {
  const buf = Buffer.alloc(SECRETS_MAX + 1);
  let n = 0;
  for (;;) {
    let r: number;
    try {
      r = readSync(0, buf, n, buf.length - n, null);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EAGAIN') continue;
      if (code === 'EOF') break;
      throw new UsageError('--pin-stdin: stdin cannot be read');
    }
    if (r === 0) break;
    n += r;
    if (n > SECRETS_MAX) throw new UsageError(`--pin-stdin: more than ${SECRETS_MAX} bytes on stdin`);
  }
  return buf.subarray(0, n).toString('utf8');
}

/**
 * The secrets of `specs` from the options of {@link secretOptions}, each given exactly one
 * way, each checked for its form. Messages name the secret, never its value.
 */
export function readSecrets(o: Record<string, unknown>, specs: readonly SecretSpec[]): string[] {
  const fromStdin = o.pinStdin === true;
  let lines: string[] | undefined;
  if (fromStdin) {
    for (const s of specs)
      if (o[camel(s.option)] !== undefined || o[camel(`${s.option}-env`)] !== undefined)
        throw new UsageError(`--pin-stdin reads ${s.label} too: do not also give --${s.option} or --${s.option}-env`);
    lines = readStdin().split(/\r?\n/);
    if (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
    if (lines.length !== specs.length)
      throw new UsageError(
        `--pin-stdin: expected ${specs.length} line(s) (${specs.map((s) => s.label).join(', then ')}), got ${lines.length}`,
      );
  }
  return specs.map((s, i) => {
    let v: string;
    const direct = o[camel(s.option)] as string | undefined;
    const env = o[camel(`${s.option}-env`)] as string | undefined;
    if (lines) v = lines[i]!.trim();
    else if (direct !== undefined && env !== undefined) throw new UsageError(`give ${s.label} one way: --${s.option} or --${s.option}-env`);
    else if (env !== undefined) {
      const e = process.env[env];
      if (e === undefined) throw new UsageError(`--${s.option}-env ${env}: no such environment variable`);
      v = e.trim();
    } else if (direct !== undefined) v = direct;
    else throw new UsageError(`give ${s.label}: --pin-stdin (recommended) or --${s.option}-env <NAME>`);
    if (!s.pattern.test(v)) throw new UsageError(`${s.label} must be ${s.form}`);
    return v;
  });
}
