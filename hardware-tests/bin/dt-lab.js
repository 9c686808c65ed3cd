#!/usr/bin/env node
// dt-lab: runs the TypeScript CLI (src/cli.ts) through tsx, so no build step
// is needed. Usage: dt-lab --help
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../src/cli.ts');
await main();
