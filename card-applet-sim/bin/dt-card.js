#!/usr/bin/env node
// Entry point of the `dt-card` command. An installed package runs the built JavaScript
// (dist/); in the repo, where the TypeScript sources sit next to bin/, it runs them
// through tsx (scripts/dev-source.mjs), so no build step is needed.
import { existsSync } from 'node:fs';

// A reader that closes the pipe early (`--help | head -1`) is no error: the rest of the output is dropped
// and the command ends as it would have, with its own exit code (a payment is never cut short by it).
for (const s of [process.stdout, process.stderr])
  s.on('error', (e) => {
    if (e.code !== 'EPIPE') throw e;
  });

const source = new URL('../src/cli.ts', import.meta.url);
const fromSource = existsSync(source);
if (fromSource) await import('../../scripts/dev-source.mjs');
const { main } = await import(fromSource ? source.href : '../dist/cli.js');
await main();
