/**
 * Runs the repo's TypeScript sources without a build step (docs/ARCHITECTURE.md, "Builds"):
 * registers tsx and adds the `dt-source` export condition, under which every @dt package
 * resolves to its `src/` instead of its built `dist/`. It does what
 * `node --conditions=dt-source --import tsx` does, for launchers that start as plain
 * JavaScript: the packages' `bin/` scripts import it when they run from the repo (an
 * installed package has no `src/` and runs `dist/` without it).
 */
import { register } from 'node:module';
import { register as registerTsx } from 'tsx/esm/api';

// Registered before tsx, so that it runs after tsx's resolve hook (the last registered runs
// first) and hands the condition to Node's resolver.
register(
  'data:text/javascript,export const resolve = (specifier, context, next) => next(specifier, { ...context, conditions: [...context.conditions, "dt-source"] });',
);
registerTsx();
