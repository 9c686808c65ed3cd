#!/usr/bin/env node
// Launcher: the ledger is TypeScript run through tsx (as every package of this repo).
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../src/cli.ts');
await main();
