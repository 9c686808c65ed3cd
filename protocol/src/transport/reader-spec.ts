/**
 * Reader specs, as `dt-pos --reader`, `config.json`'s `reader` and
 * `dt-lab --reader` accept them.
 *
 * @module
 */

/** A parsed reader spec. */
export type ReaderSpec =
  /** A PC/SC reader: the first one (no `name`), or the one whose name holds `name`. */
  | { readonly kind: 'pcsc'; readonly name?: string }
  /** A wallet on a serial line (`/dev/ttyACM0`, a pty). */
  | { readonly kind: 'serial'; readonly path: string }
  /** A wallet on USB HID, by device path (as `dt-pos readers` lists it). */
  | { readonly kind: 'hid'; readonly path: string };

/** The accepted forms, for usage messages. */
export const READER_SPEC_FORMS = 'pcsc, pcsc:<name>, serial:<path>, hid:<path>';

/** Options of {@link parseReaderSpec}. */
export interface ParseReaderSpecOptions {
  /** A spec without a known prefix is a PC/SC reader name (dt-lab's `--reader "ACR122"`); default false: refused. */
  readonly bareNames?: boolean;
}

/**
 * Parses `pcsc`, `pcsc:<name>`, `serial:<path>`, `hid:<path>` (and, with
 * `bareNames`, any other non-empty text as a PC/SC reader name). Returns
 * `undefined` for anything else, including an empty name or path; the caller
 * reports it with its own usage error ({@link READER_SPEC_FORMS}).
 */
export function parseReaderSpec(spec: string, options: ParseReaderSpecOptions = {}): ReaderSpec | undefined {
  if (spec === 'pcsc') return { kind: 'pcsc' };
  const prefixed = /^(pcsc|serial|hid):(.*)$/s.exec(spec);
  if (prefixed) {
    const rest = prefixed[2]!;
    if (rest === '') return undefined;
    const kind = prefixed[1] as 'pcsc' | 'serial' | 'hid';
    return kind === 'pcsc' ? { kind, name: rest } : { kind, path: rest };
  }
  return options.bareNames && spec !== '' ? { kind: 'pcsc', name: spec } : undefined;
}

/** The spec as text again (`pcsc`, `pcsc:<name>`, `serial:<path>`, `hid:<path>`). */
export function formatReaderSpec(spec: ReaderSpec): string {
  if (spec.kind === 'pcsc') return spec.name === undefined ? 'pcsc' : `pcsc:${spec.name}`;
  return `${spec.kind}:${spec.path}`;
}
