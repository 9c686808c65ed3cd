#!/usr/bin/env node
// Entry point of the `dt-acquirer` command: loads the TypeScript sources through tsx
// (the workspace ships sources, not a build).
import { register } from 'tsx/esm/api';

register();
await import('../src/cli.ts');
