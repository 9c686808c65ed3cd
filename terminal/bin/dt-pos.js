#!/usr/bin/env node
// Entry point of the `dt-pos` command. An installed package runs the built JavaScript
// (dist/); in the repo, where the TypeScript sources sit next to bin/, it runs them
// through tsx (scripts/dev-source.mjs), so no build step is needed.
import { existsSync } from 'node:fs';

// A reader that closes the pipe early (`--help | head -1`) is no error: the rest of the output is dropped
// and the command ends as it would have, with its own exit code (a payment is never cut short by it).
for (const s of [process.stdout, process.stderr])
  s.on('error', (e) => {
    if (e.code !== 'EPIPE') throw e;
  });

const source = new URL('../src/cli/main.ts', import.meta.url);
const fromSource = existsSync(source);
if (fromSource) await import('../../scripts/dev-source.mjs');
const { run } = await import(fromSource ? source.href : '../dist/cli/main.js');
process.exitCode = await run(process.argv);
