/**
 * `protocol/src` must stay pure (ARCHITECTURE: it runs in firmware and
 * embedded JS engines): no Node built-ins, no Buffer, no TextEncoder/
 * TextDecoder, no process, no timers, and imports only from itself,
 * `@noble/curves`, `@noble/hashes`, `fast-sha256` and `cbor-x`, and the package
 * import `#sha256`, whose `default` target is pure. The exceptions are
 * `src/native.ts`, the Node-only fast path, `src/fs.ts` (`@dt/protocol/fs`,
 * the command-line tools' file helpers) and `src/cli.ts` (`@dt/protocol/cli`,
 * their process-level conventions: the closed-pipe guard), which the pure
 * entry point must not re-export, and `src/crypto/sha256-node.ts`, the `node` target of
 * `#sha256`, which no file imports by path. `src/http/` (`@dt/protocol/http`, the HTTP client layer) runs
 * on the platform's `fetch` and timers, not in firmware: it may use
 * `setTimeout`/`clearTimeout` and nothing else of the list (no Node import, no
 * Buffer, no process); no pure file imports it and the pure entry point does
 * not re-export it.
 *
 * Checked on the TypeScript syntax tree, so comments that mention these
 * names do not count and a use cannot hide in an unusual formatting.
 */
import test from 'ava';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

const SRC = resolve(dirname(fileURLToPath(import.meta.url)), '..', 'src');
const EXEMPT = new Set(['native.ts', 'fs.ts', 'cli.ts', 'crypto/sha256-node.ts']);
/** The HTTP layer's folder and the globals it may use beyond the pure set (web platform timers). */
const HTTP_DIR = 'http/';
const HTTP_ALLOWED_GLOBALS = new Set(['setTimeout', 'clearTimeout']);
const ALLOWED_PACKAGES = [/^@noble\/curves(\/|$)/, /^@noble\/hashes(\/|$)/, /^cbor-x$/, /^fast-sha256$/, /^#sha256$/];
const FORBIDDEN_GLOBALS = new Set([
  'Buffer',
  'TextEncoder',
  'TextDecoder',
  'process',
  'require',
  'module',
  '__dirname',
  '__filename',
  'setTimeout',
  'setInterval',
  'setImmediate',
  'clearTimeout',
  'clearInterval',
  'clearImmediate',
  'global',
]);

function sourceFiles(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...sourceFiles(p));
    else if (name.endsWith('.ts')) out.push(p);
  }
  return out;
}

/** Problems found in one file: forbidden imports and uses of forbidden globals. */
function impurities(file: string, text: string): string[] {
  const inHttp = file.startsWith(HTTP_DIR);
  const sf = ts.createSourceFile(file, text, ts.ScriptTarget.ES2022, true);
  const problems: string[] = [];
  const where = (n: ts.Node) => `${file}:${sf.getLineAndCharacterOfPosition(n.getStart(sf)).line + 1}`;
  const checkSpecifier = (spec: ts.Expression | undefined, n: ts.Node) => {
    if (!spec || !ts.isStringLiteralLike(spec)) return;
    const s = spec.text;
    if (s.startsWith('./') || s.startsWith('../')) {
      if (/(^|\/)native(\.ts)?$/.test(s)) problems.push(`${where(n)}: imports the Node-only native.ts`);
      if (/(^|\/)fs(\.ts)?$/.test(s)) problems.push(`${where(n)}: imports the Node-only fs.ts`);
      if (/(^|\/)cli(\.ts)?$/.test(s)) problems.push(`${where(n)}: imports the Node-only cli.ts`);
      if (/(^|\/)sha256-node(\.ts)?$/.test(s)) problems.push(`${where(n)}: imports the Node-only sha256-node.ts`);
      if (!inHttp && /(^|\/)http(\/|$)/.test(s)) problems.push(`${where(n)}: imports the fetch-based http/ layer`);
      return;
    }
    if (!ALLOWED_PACKAGES.some((re) => re.test(s))) problems.push(`${where(n)}: imports '${s}'`);
  };
  const visit = (n: ts.Node): void => {
    if (ts.isImportDeclaration(n) || ts.isExportDeclaration(n)) checkSpecifier(n.moduleSpecifier, n);
    else if (ts.isCallExpression(n) && n.expression.kind === ts.SyntaxKind.ImportKeyword) checkSpecifier(n.arguments[0], n);
    else if (ts.isImportTypeNode(n) && ts.isLiteralTypeNode(n.argument)) checkSpecifier(n.argument.literal as ts.Expression, n);
    else if (ts.isIdentifier(n) && FORBIDDEN_GLOBALS.has(n.text) && !(inHttp && HTTP_ALLOWED_GLOBALS.has(n.text))) {
      const p = n.parent;
      // A property name (`x.process`, `{ process: 1 }`) or a declaration of our own is not the global.
      const isPropertyName =
        (ts.isPropertyAccessExpression(p) && p.name === n) ||
        ((ts.isPropertyAssignment(p) || ts.isPropertySignature(p) || ts.isPropertyDeclaration(p) || ts.isMethodDeclaration(p)) &&
          p.name === n);
      if (!isPropertyName) problems.push(`${where(n)}: uses ${n.text}`);
    }
    ts.forEachChild(n, visit);
  };
  visit(sf);
  return problems;
}

test('protocol/src imports nothing from Node and uses no Node globals (native.ts, fs.ts and cli.ts excepted; http/ may use timers)', (t) => {
  const files = sourceFiles(SRC).filter((f) => !EXEMPT.has(relative(SRC, f)));
  t.true(files.length > 10, 'scans the whole source tree');
  t.true(
    files.some((f) => relative(SRC, f).startsWith(HTTP_DIR)),
    'scans http/ too',
  );
  const problems = files.flatMap((f) => impurities(relative(SRC, f), readFileSync(f, 'utf8')));
  t.deepEqual(problems, []);
});

test('the purity check itself catches each kind of impurity', (t) => {
  const bad = [
    "import { readFileSync } from 'node:fs';",
    "import fs from 'fs';",
    "export { x } from 'node:crypto';",
    "const m = await import('node:os');",
    'const b = Buffer.from([1]);',
    'const e = new TextEncoder();',
    'const d = new TextDecoder();',
    'if (process.env.X) {}',
    'setTimeout(() => 0, 1);',
    "import { nativeVerifier } from './native.ts';",
    "import { makeDirs } from '../fs.ts';",
    "import { ignoreClosedPipes } from '../cli.ts';",
    "import { sha256Digest } from './crypto/sha256-node.ts';",
    "import x from 'left-pad';",
  ];
  for (const line of bad) t.is(impurities('probe.ts', line).length, 1, line);
  const good = [
    "import { p256 } from '@noble/curves/nist.js';",
    "import { sha256 } from '@noble/hashes/sha2.js';",
    "import { Decoder } from 'cbor-x';",
    "import fastSha256 from 'fast-sha256';",
    "import { sha256Digest } from '#sha256';",
    "import { x } from '../bytes.ts';",
    '// Buffer, TextEncoder and process in a comment',
    'const o = { process: 1 }; o.process = 2;',
    "const s = 'setTimeout is not called here';",
  ];
  for (const line of good) t.deepEqual(impurities('probe.ts', line), [], line);
  // The HTTP layer: timers yes, Node no; pure files may not import it.
  t.deepEqual(impurities('http/probe.ts', 'const h = setTimeout(() => 0, 1); clearTimeout(h);'), []);
  t.deepEqual(impurities('http/probe.ts', "import { x } from '../bytes.ts';"), []);
  for (const line of ["import { request } from 'node:http';", 'const b = Buffer.from([1]);', 'if (process.env.X) {}'])
    t.is(impurities('http/probe.ts', line).length, 1, line);
  t.is(impurities('probe.ts', "import { httpRequest } from './http/index.ts';").length, 1);
  t.is(impurities('card/probe.ts', "import { httpRequest } from '../http/request.ts';").length, 1);
});

test('the pure entry point re-exports neither native.ts, fs.ts, cli.ts nor http/', (t) => {
  const index = readFileSync(join(SRC, 'index.ts'), 'utf8').replace(/\/\*[\s\S]*?\*\/|\/\/.*$/gm, '');
  t.false(/native/.test(index));
  t.false(/\bfs\b/.test(index));
  t.false(/\bcli\b/.test(index));
  t.false(/http/.test(index));
});

test('#sha256 resolves to node:crypto only under the node condition, to the pure fast-sha256 file otherwise', (t) => {
  const pkg = JSON.parse(readFileSync(join(SRC, '..', 'package.json'), 'utf8')) as { imports: Record<string, unknown> };
  t.deepEqual(Object.keys(pkg.imports), ['#sha256']);
  t.deepEqual(pkg.imports['#sha256'], {
    'dt-source': { node: './src/crypto/sha256-node.ts', default: './src/crypto/sha256.ts' },
    node: './dist/crypto/sha256-node.js',
    default: './dist/crypto/sha256.js',
  });
  // The pure target is scanned by the purity test above (it is not exempt).
  t.false(EXEMPT.has('crypto/sha256.ts'));
});
