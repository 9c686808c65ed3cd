/**
 * The packages as an integrator gets them. `npm pack` builds `@dt/protocol` and
 * `@dt/terminal` (their prepack script: `tsc -b`) and packs them; npm installs the two
 * tarballs in a temporary folder outside the repo, with their dependencies at the versions
 * of the repo's lockfile (from the npm cache that `npm ci` filled, else the npm registry) and
 * install scripts only for the packages the root package.json approves (`allowScripts`: the
 * native builds). Then plain Node, without tsx or the dt-source condition, runs
 * pack/consumer.mjs on the built JavaScript, the installed `dt-pos` bin runs, and the repo's
 * tsc compiles pack/consumer-types.ts against the installed `.d.ts`.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, '..');
const exec = promisify(execFile);

/** The environment of a child npm or Node: no npm_* variables of the npm that runs this test (they would point the child at the repo), no NODE_OPTIONS. */
function cleanEnv(): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^npm_/i.test(k) && k !== 'NODE_OPTIONS'));
}

/** Exact versions of every third-party package that the lockfile holds at one version only. */
function lockedVersions(): Record<string, string> {
  const lock = JSON.parse(readFileSync(join(ROOT, 'package-lock.json'), 'utf8')) as {
    packages: Record<string, { version?: string; link?: boolean }>;
  };
  const seen = new Map<string, Set<string>>();
  for (const [path, entry] of Object.entries(lock.packages)) {
    const at = path.lastIndexOf('node_modules/');
    if (at < 0 || entry.link || entry.version === undefined) continue;
    const name = path.slice(at + 'node_modules/'.length);
    if (name.startsWith('@dt/')) continue;
    seen.set(name, (seen.get(name) ?? new Set()).add(entry.version));
  }
  return Object.fromEntries([...seen].filter(([, v]) => v.size === 1).map(([name, v]) => [name, [...v][0]!]));
}

interface PackResult {
  name: string;
  filename: string;
  files: { path: string }[];
}

test('@dt/protocol and @dt/terminal packed, installed outside the repo and used from plain Node', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'dt-pack-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  t.false(dir.startsWith(ROOT + sep), 'the temporary folder is outside the repo');
  const env = cleanEnv();

  const packed = await exec('npm', ['pack', '-w', 'protocol', '-w', 'terminal', '--pack-destination', dir, '--json'], {
    cwd: ROOT,
    env,
    maxBuffer: 16 << 20,
  });
  const tarballs = JSON.parse(packed.stdout) as PackResult[];
  t.deepEqual(tarballs.map((p) => p.name).sort(), ['@dt/protocol', '@dt/terminal']);
  for (const p of tarballs) {
    const files = p.files.map((f) => f.path);
    t.true(files.includes('dist/index.js') && files.includes('dist/index.d.ts'), `${p.name} ships its build`);
    t.deepEqual(
      files.filter(
        (f) =>
          !(/^(dist\/|bin\/|package\.json$|README\.md$)/.test(f) || (p.name === '@dt/terminal' && /^(screen\/|openapi\.json$)/.test(f))) ||
          f.endsWith('.tsbuildinfo'),
      ),
      [],
      `${p.name} ships only dist/, bin/, package.json, README.md (and the terminal its screen/ and openapi.json)`,
    );
  }
  t.true(tarballs.find((p) => p.name === '@dt/protocol')!.files.some((f) => f.path === 'dist/native.js'));
  t.true(tarballs.find((p) => p.name === '@dt/terminal')!.files.some((f) => f.path === 'bin/dt-pos.js'));

  const rootPkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { allowScripts: Record<string, boolean> };
  const file = (name: string) => `file:./${tarballs.find((p) => p.name === name)!.filename}`;
  writeFileSync(
    join(dir, 'package.json'),
    JSON.stringify({
      name: 'dt-integrator',
      private: true,
      type: 'module',
      dependencies: { '@dt/protocol': file('@dt/protocol'), '@dt/terminal': file('@dt/terminal') },
      overrides: lockedVersions(),
      allowScripts: rootPkg.allowScripts,
    }),
  );
  // JOBS: node-gyp compiles the native modules' sources in parallel (better-sqlite3 is most of the time).
  await exec('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', '--loglevel=error'], {
    cwd: dir,
    env: { ...env, JOBS: 'max' },
    maxBuffer: 16 << 20,
  });

  // The installed dt-pos runs dist/: help, then init, which writes a signed certificate request.
  const help = await exec(join(dir, 'node_modules/.bin/dt-pos'), ['--help'], { cwd: dir, env });
  t.regex(help.stdout, /^Usage: dt-pos /);
  const posDir = join(dir, 'pos');
  const init = await exec(
    join(dir, 'node_modules/.bin/dt-pos'),
    ['init', '-d', posDir, '--merchant-id', 'KZ-ALM-000777', '--mcc', '5411', '--name', 'Corner shop', '--json'],
    { cwd: dir, env },
  );
  const initOut = JSON.parse(init.stdout) as { initialized: boolean; terminal: string };
  t.false(initOut.initialized);
  const notReady = await t.throwsAsync(exec(join(dir, 'node_modules/.bin/dt-pos'), ['status', '-d', posDir, '--json'], { cwd: dir, env }));
  t.is((notReady as unknown as { code: number }).code, 5, 'status before the certificate is installed: exit 5 (not initialized)');

  copyFileSync(join(HERE, 'pack/consumer.mjs'), join(dir, 'consumer.mjs'));
  const run = await exec(process.execPath, ['consumer.mjs', join(ROOT, 'protocol/vectors'), join(dir, 'work'), posDir], { cwd: dir, env });
  const out = JSON.parse(run.stdout) as Record<string, unknown> & {
    resolved: Record<string, string>;
    transfer: Record<string, unknown>;
    invalidTransfers: Record<string, string>;
    handover: { fields: string[]; reencoded: boolean; history: number };
    certificateRequest: Record<string, unknown>;
  };

  for (const [what, url] of Object.entries(out.resolved))
    t.true(
      url.startsWith(`file://${dir}/node_modules/@dt/`) && /\/dist\/[a-z]+\.js$/.test(url),
      `${what} resolves to the installed build: ${url}`,
    );

  const vectors = JSON.parse(readFileSync(join(ROOT, 'protocol/vectors/transfer.json'), 'utf8')) as {
    valid: { decoded: Record<string, unknown> }[];
    invalid: { name: string; error: string }[];
  };
  const expected = vectors.valid[0]!.decoded;
  t.deepEqual(out.transfer, {
    amount: expected['amount'],
    merchant: expected['merchant'],
    counter: expected['counter'],
    card: expected['card'],
    payloadReencoded: true,
    resigned: true,
  });
  t.deepEqual(out.invalidTransfers, Object.fromEntries(vectors.invalid.map((v) => [v.name, v.error])));
  t.true(Object.keys(out.invalidTransfers).length >= 10);
  const handover = JSON.parse(readFileSync(join(ROOT, 'protocol/vectors/handover.json'), 'utf8')) as {
    valid: { decoded: { history: unknown[] } }[];
  };
  t.deepEqual(out.handover, {
    fields: Object.keys(handover.valid[0]!.decoded).sort(),
    reencoded: true,
    history: handover.valid[0]!.decoded.history.length,
  });
  t.deepEqual(out['signature'], { length: 64, noble: true, native: true, otherMessage: false });

  t.like(out['policy'], { floorLimit: 200_000, narrowedFloorLimit: 100_000 });
  t.is(out['unknownPolicyKey'], 'CONFIG');
  t.deepEqual(out['journalPragmas'], { journalMode: 'wal', synchronous: 2 });
  t.deepEqual(out['journal'], { torn: 1, amount: 15_000, state: 'torn' });

  t.deepEqual(out.certificateRequest, {
    contentType: true,
    merchant: 'KZ-ALM-000777',
    mcc: 5411,
    name: 'Corner shop',
    kid: initOut.terminal,
    signedByItsKey: 'ok',
    tampered: 'BAD_SIGNATURE',
  });

  t.true(out['hid']);
  t.regex(
    String(out['serial']),
    /^READER_UNAVAILABLE: cannot open \S*no-such-port: No such file or directory$/,
    'the serialport binding refuses a missing port',
  );
  t.is(out['pcsc'], 'function');

  copyFileSync(join(HERE, 'pack/consumer-types.ts'), join(dir, 'consumer-types.ts'));
  writeFileSync(
    join(dir, 'tsconfig.json'),
    JSON.stringify({
      compilerOptions: {
        target: 'ES2022',
        module: 'NodeNext',
        moduleResolution: 'NodeNext',
        strict: true,
        noEmit: true,
        skipLibCheck: false,
      },
      files: ['consumer-types.ts'],
    }),
  );
  const tsc = await exec(process.execPath, [join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', dir], { cwd: dir, env }).catch(
    (e: { stdout: string }) => e,
  );
  t.is(tsc.stdout, '', 'the installed .d.ts type an integrator program (and reject the wrong uses)');
});
