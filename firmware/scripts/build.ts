/**
 * Builds the firmware bundle for embedded JS engines: `dist/firmware.js`, an
 * IIFE that defines the global `DTFirmware` (everything `src/index.ts`
 * exports). `--platform=neutral`: no Node built-ins can be resolved, so a
 * stray `node:*` import fails the build instead of reaching a device.
 *
 * Usage: `npm run build -w firmware` (or import {@link buildBundle}).
 */
import { build } from 'esbuild';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { readFileSync } from 'node:fs';

const here = path.dirname(fileURLToPath(import.meta.url));
/** Absolute path of the bundle. */
export const BUNDLE_PATH = path.join(here, '..', 'dist', 'firmware.js');
/** Name of the global the bundle defines. */
export const GLOBAL_NAME = 'DTFirmware';

/** Builds the bundle and returns its source text. */
export async function buildBundle(outfile: string = BUNDLE_PATH): Promise<string> {
  await build({
    entryPoints: [path.join(here, '..', 'src', 'index.ts')],
    bundle: true,
    platform: 'neutral',
    // Neutral has no default main fields; the dependencies (noble, cbor-x) publish ESM.
    mainFields: ['module', 'main'],
    // The @dt packages from their TypeScript sources (no build of protocol/ needed); `module` is
    // the condition esbuild adds by itself when none are given.
    conditions: ['dt-source', 'module'],
    format: 'iife',
    globalName: GLOBAL_NAME,
    target: 'es2020',
    minify: true,
    legalComments: 'none',
    outfile,
    logLevel: 'warning',
  });
  const text = readFileSync(outfile, 'utf8');
  // Belt and braces: a bundled CommonJS shim would still try to load modules at run time.
  if (/\brequire\(["']/.test(text)) throw new Error('bundle contains require() calls');
  return text;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const text = await buildBundle();
  console.log(`${path.relative(process.cwd(), BUNDLE_PATH)}: ${text.length} bytes`);
}
