#!/usr/bin/env node
// Entry point of the `dt-pos` command: loads the TypeScript sources through tsx
// (the workspace ships sources, not a build).
import { register } from 'tsx/esm/api';

register();
const { run } = await import('../src/cli/main.ts');
process.exitCode = await run(process.argv);
