#!/usr/bin/env node
// Entry point of the `dt-bank` command. An installed package runs the built JavaScript
// (dist/); in the repo, where the TypeScript sources sit next to bin/, it runs them
// through tsx (scripts/dev-source.mjs), so no build step is needed.
import { existsSync } from 'node:fs';

const source = new URL('../src/bank-cli.ts', import.meta.url);
const fromSource = existsSync(source);
if (fromSource) await import('../../scripts/dev-source.mjs');
// A reader that closes the pipe early (`--help | head -1`) is no error (@dt/protocol/cli, the one guard of every command).
const { ignoreClosedPipes } = await import('@dt/protocol/cli');
ignoreClosedPipes();
const { main } = await import(fromSource ? source.href : '../dist/bank-cli.js');
await main();
