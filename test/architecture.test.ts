/**
 * Architecture rules of docs/ARCHITECTURE.md, checked on the source:
 * packages import only downward in the dependency table, the pure cores
 * (protocol/, firmware/) use no Node built-ins, no Buffer and no timers, and
 * no package reaches into another's files by relative path, and no source file
 * imports itself through a chain of imports (within or across packages).
 */
import test from 'ava';
import { readFileSync, readdirSync, statSync, existsSync } from 'node:fs';
import { join, relative, resolve, dirname, sep } from 'node:path';
import { builtinModules } from 'node:module';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** package folder -> workspace packages it may import (the "may depend on" column). */
const ALLOWED: Record<string, readonly string[]> = {
  protocol: [],
  firmware: ['protocol'],
  'card-applet-sim': ['firmware', 'protocol'],
  terminal: ['protocol'],
  acquirer: ['protocol'],
  ledger: ['protocol'],
  'hardware-tests': ['terminal', 'protocol', 'card-applet-sim', 'firmware'],
  bank: ['terminal', 'ledger', 'card-applet-sim', 'firmware', 'protocol'],
};

/** Third-party packages the pure cores may use (and protocol's package import `#sha256`, whose default target is pure). */
const PURE_THIRD_PARTY: Record<string, readonly string[]> = {
  protocol: ['cbor-x', '@noble/curves', '@noble/hashes', 'fast-sha256', '#sha256'],
  firmware: ['@noble/curves', '@noble/hashes', 'crc-32'],
};

/** Files of the pure cores that are allowed to use Node (documented exceptions: native.ts, fs.ts, cli.ts, and `#sha256`'s `node` target). */
const PURE_EXCEPTIONS = new Set([
  'protocol/src/native.ts',
  'protocol/src/fs.ts',
  'protocol/src/cli.ts',
  'protocol/src/crypto/sha256-node.ts',
]);
/**
 * The HTTP layer (`@dt/protocol/http`, a separate entry point on the platform's fetch): it may wait between
 * retries (`setTimeout`), and nothing else of the pure cores' forbidden list (no Node import either).
 */
const TIMER_ALLOWED_UNDER = 'protocol/src/http/';
/** Node globals, timers and Buffer in a pure core; a property of our own (`timers.setTimeout(...)`, `readonly setTimeout: ...`) is not the global. */
const FORBIDDEN_IN_PURE =
  /(?<![.\w$])(Buffer|process\.|setTimeout|setInterval|setImmediate|require\(|__dirname|TextEncoder|TextDecoder)\b(?!\s*\??:)/;
const FORBIDDEN_IN_HTTP = /(?<![.\w$])(Buffer|process\.|setInterval|setImmediate|require\(|__dirname|TextEncoder|TextDecoder)\b(?!\s*\??:)/;

const FOLDER_OF_PACKAGE: Record<string, string> = {
  '@dt/protocol': 'protocol',
  '@dt/firmware': 'firmware',
  '@dt/card-applet-sim': 'card-applet-sim',
  '@dt/terminal': 'terminal',
  '@dt/acquirer': 'acquirer',
  '@dt/ledger': 'ledger',
  '@dt/hardware-tests': 'hardware-tests',
  '@dt/bank': 'bank',
};

function sourceFiles(dir: string): string[] {
  if (!existsSync(dir)) return [];
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...sourceFiles(p));
    else if (/\.(ts|mts|js|mjs)$/.test(name) && !name.endsWith('.d.ts')) out.push(p);
  }
  return out;
}

/** Module specifiers of static imports, re-exports and dynamic imports. */
function importsOf(source: string): string[] {
  const specs: string[] = [];
  const re =
    /(?:^|[\s;])(?:import|export)\s[^'";]*?from\s*['"]([^'"]+)['"]|(?:^|[\s;])import\s*['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/gm;
  for (const m of source.matchAll(re)) specs.push((m[1] ?? m[2] ?? m[3])!);
  return specs;
}

function packageName(spec: string): string {
  const parts = spec.split('/');
  return spec.startsWith('@') ? parts.slice(0, 2).join('/') : parts[0]!;
}

const NODE_BUILTINS = new Set(builtinModules.flatMap((m) => [m, `node:${m}`]));

function stripComments(source: string): string {
  // Block comments keep their line breaks, so that reported line numbers are the file's.
  return source.replace(/\/\*[\s\S]*?\*\//g, (c) => c.replace(/[^\n]/g, '')).replace(/(^|[^:'"`])\/\/.*$/gm, '$1');
}

const packages = Object.keys(ALLOWED).filter((p) => existsSync(join(ROOT, p, 'package.json')));

test('every existing package is covered by the rules', (t) => {
  t.true(packages.includes('protocol'));
  const rootPkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { workspaces: string[] };
  for (const ws of rootPkg.workspaces) {
    t.true(ws === 'test' || ws in ALLOWED, `workspace ${ws} has no row in the dependency table`);
  }
});

for (const pkg of packages) {
  test(`${pkg}: imports only what the dependency table allows`, (t) => {
    const files = sourceFiles(join(ROOT, pkg, 'src'));
    t.true(files.length > 0, `${pkg}/src has source files`);
    const problems: string[] = [];
    for (const file of files) {
      const rel = relative(ROOT, file).split(sep).join('/');
      for (const spec of importsOf(readFileSync(file, 'utf8'))) {
        if (spec.startsWith('.')) {
          const target = relative(ROOT, resolve(dirname(file), spec))
            .split(sep)
            .join('/');
          if (!target.startsWith(`${pkg}/`)) problems.push(`${rel}: relative import leaves the package: ${spec}`);
          continue;
        }
        const name = packageName(spec);
        const folder = FOLDER_OF_PACKAGE[name];
        if (folder !== undefined) {
          if (folder !== pkg && !ALLOWED[pkg]!.includes(folder)) problems.push(`${rel}: may not import ${name}`);
          continue;
        }
        const pure = PURE_THIRD_PARTY[pkg];
        if (pure && !PURE_EXCEPTIONS.has(rel)) {
          if (NODE_BUILTINS.has(spec) || spec.startsWith('node:')) problems.push(`${rel}: pure package imports Node built-in ${spec}`);
          else if (!pure.includes(name)) problems.push(`${rel}: pure package imports ${name}`);
        }
      }
    }
    t.deepEqual(problems, []);
  });
}

for (const pkg of Object.keys(PURE_THIRD_PARTY).filter((p) => packages.includes(p))) {
  test(`${pkg}: pure core uses no Node globals, timers or Buffer`, (t) => {
    const problems: string[] = [];
    for (const file of sourceFiles(join(ROOT, pkg, 'src'))) {
      const rel = relative(ROOT, file).split(sep).join('/');
      if (PURE_EXCEPTIONS.has(rel)) continue;
      const rule = rel.startsWith(TIMER_ALLOWED_UNDER) ? FORBIDDEN_IN_HTTP : FORBIDDEN_IN_PURE;
      stripComments(readFileSync(file, 'utf8'))
        .split('\n')
        .forEach((line, i) => {
          const m = rule.exec(line);
          if (m) problems.push(`${rel}:${i + 1}: ${m[1]}`);
        });
    }
    t.deepEqual(problems, []);
  });
}

/** Source entry (the `dt-source` condition) of each export of a workspace package, keyed by specifier. */
function sourceExports(): Map<string, string> {
  const out = new Map<string, string>();
  for (const [name, folder] of Object.entries(FOLDER_OF_PACKAGE)) {
    const file = join(ROOT, folder, 'package.json');
    if (!existsSync(file)) continue;
    const pkg = JSON.parse(readFileSync(file, 'utf8')) as { exports: Record<string, string | Record<string, string>> };
    for (const [sub, target] of Object.entries(pkg.exports)) {
      const src = typeof target === 'string' ? target : target['dt-source'];
      if (src !== undefined) out.set(name + sub.slice(1), resolve(ROOT, folder, src));
    }
  }
  return out;
}

/** The file an import leads to when it is one of the workspace's own files (relative, or a @dt package's export). */
function importTarget(file: string, spec: string, exportsMap: Map<string, string>): string | undefined {
  if (spec.startsWith('.')) return resolve(dirname(file), spec);
  return exportsMap.get(spec);
}

/** Every import cycle of a graph (file -> files it imports), each once, as the path that closes it. */
function findCycles(graph: ReadonlyMap<string, readonly string[]>): string[][] {
  const state = new Map<string, 'open' | 'done'>();
  const stack: string[] = [];
  const seen = new Set<string>();
  const cycles: string[][] = [];
  const visit = (node: string): void => {
    state.set(node, 'open');
    stack.push(node);
    for (const next of graph.get(node) ?? []) {
      if (!graph.has(next)) continue;
      const s = state.get(next);
      if (s === 'open') {
        const cycle = stack.slice(stack.indexOf(next));
        const key = [...cycle].sort().join('\n');
        if (!seen.has(key)) {
          seen.add(key);
          cycles.push([...cycle, next]);
        }
      } else if (s === undefined) visit(next);
    }
    stack.pop();
    state.set(node, 'done');
  };
  for (const node of [...graph.keys()].sort()) if (!state.has(node)) visit(node);
  return cycles;
}

test('no source file imports itself through a chain of imports, within or across packages (type imports count)', (t) => {
  const exportsMap = sourceExports();
  const graph = new Map<string, string[]>();
  for (const pkg of packages) {
    for (const file of sourceFiles(join(ROOT, pkg, 'src'))) {
      const targets = importsOf(readFileSync(file, 'utf8')).map((spec) => importTarget(file, spec, exportsMap));
      graph.set(
        file,
        targets.filter((x): x is string => x !== undefined),
      );
    }
  }
  t.true(graph.size > 100, 'scans every package');
  const rel = (f: string) => relative(ROOT, f).split(sep).join('/');
  t.deepEqual(
    findCycles(graph).map((c) => c.map(rel).join(' -> ')),
    [],
  );
});

test('the cycle finder finds direct, indirect and self imports, and follows @dt exports (guards the rule above)', (t) => {
  const g = new Map<string, string[]>([
    ['a', ['b']],
    ['b', ['c', 'x']],
    ['c', ['a']],
    ['d', ['d']],
    ['e', ['a']],
    ['f', ['g']],
    ['g', []],
  ]);
  t.deepEqual(findCycles(g), [
    ['a', 'b', 'c', 'a'],
    ['d', 'd'],
  ]);
  t.deepEqual(
    findCycles(
      new Map([
        ['a', ['b']],
        ['b', []],
      ]),
    ),
    [],
  );
  const exportsMap = sourceExports();
  t.is(importTarget(join(ROOT, 'ledger/src/ledger.ts'), '@dt/protocol/native', exportsMap), join(ROOT, 'protocol/src/native.ts'));
  t.is(importTarget(join(ROOT, 'ledger/src/ledger.ts'), './load.ts', exportsMap), join(ROOT, 'ledger/src/load.ts'));
  t.is(importTarget(join(ROOT, 'ledger/src/ledger.ts'), 'fastify', exportsMap), undefined);
});

test('the import scanner finds every import form (guards the rules above)', (t) => {
  const src = `import a from 'x';\nimport { b } from "@dt/ledger";\nexport * from './c.ts';\nimport 'side-effect';\nconst d = await import('node:fs');\nimport type { E } from '@noble/curves/nist.js';`;
  t.deepEqual(importsOf(src), ['x', '@dt/ledger', './c.ts', 'side-effect', 'node:fs', '@noble/curves/nist.js']);
  t.is(packageName('@noble/curves/nist.js'), '@noble/curves');
});

test('the pure-core globals rule catches the globals and not properties of our own (guards the rule above)', (t) => {
  for (const line of ['setTimeout(f, 1);', 'const b = Buffer.from(x);', 'if (process.env.X) {}', 'new TextDecoder()', 'x = setImmediate;'])
    t.truthy(FORBIDDEN_IN_PURE.exec(line), line);
  for (const line of [
    'timers.setTimeout(f, 1);',
    'readonly setTimeout: (fn: () => void) => unknown;',
    'const o = { setTimeout: f };',
    'mySetTimeout(f)',
  ])
    t.is(FORBIDDEN_IN_PURE.exec(line), null, line);
  t.is(FORBIDDEN_IN_HTTP.exec('const h = setTimeout(f, 1);'), null);
  t.truthy(FORBIDDEN_IN_HTTP.exec('const b = Buffer.from(x);'));
});
