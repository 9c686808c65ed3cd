/**
 * The exit-code convention of every command line of the toolkit (the root
 * README's "Exit codes" table): 0 ok, 1 refused by the business rules, 2
 * usage, 3 offline or unreachable; 4 and up are each command's own. Each
 * command keeps its one table of rows (code, name, meaning); these helpers
 * give it the codes by name and the lines its `--help` prints, so that the
 * table, the code and the help cannot drift apart.
 *
 * @module
 */

/** One row of a command's exit-code table. */
export interface ExitCodeRow {
  readonly code: number;
  readonly name: string;
  readonly meaning: string;
}

/** Code 2's meaning, the same for every command. */
export const USAGE_EXIT_MEANING = 'usage: bad command, option or value, or a file named on the command line is missing or unreadable';

/** A table's codes by name (`ExitCode.USAGE === 2`), typed with each row's literal code. */
export type ExitCodesByName<T extends readonly ExitCodeRow[]> = {
  readonly [K in T[number]['name']]: Extract<T[number], { name: K }>['code'];
};

/** The codes of `rows` by name. */
export function exitCodesByName<const T extends readonly ExitCodeRow[]>(rows: T): ExitCodesByName<T> {
  return Object.freeze(Object.fromEntries(rows.map((e) => [e.name, e.code]))) as ExitCodesByName<T>;
}

/** The "Exit codes:" block of a `--help`: one line a row, the code padded to three columns, then its meaning. */
export function exitCodesHelp(rows: readonly ExitCodeRow[]): string {
  return `Exit codes:\n${rows.map((e) => `  ${String(e.code).padEnd(3)} ${e.meaning}`).join('\n')}`;
}
