/**
 * Process-level conventions the command-line tools share (Node only): each
 * `bin/dt-*.js` and `npm run demo` call these before they print anything.
 *
 * @module
 */
import type { Writable } from 'node:stream';

/**
 * Makes a reader that closes the pipe early (`--help | head -1`, `npm run demo | head`) no error:
 * an EPIPE on `streams` (stdout and stderr by default) drops the rest of the output, and the
 * command ends as it would have, with its own exit code (a payment is never cut short by it). Any
 * other error of those streams is thrown, as Node would without a listener.
 */
export function ignoreClosedPipes(streams: readonly Writable[] = [process.stdout, process.stderr]): void {
  for (const s of streams)
    s.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code !== 'EPIPE') throw e;
    });
}
