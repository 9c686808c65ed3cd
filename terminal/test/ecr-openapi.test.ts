/**
 * The ECR API and its OpenAPI document agree: every route the server registers is in
 * `terminal/openapi.json` (same method and path), and every operation of the document is a
 * route of the server; the document is the one served at /v1/openapi.json; the token file is
 * created 0600 and refused when others can read it; the token comparison is exact.
 */
import test from 'ava';
import { chmodSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { buildEcrApp, ecrRoutes, ecrToken, OPENAPI_PATH, tokenMatches, type PosService } from '../src/index.ts';
import { tempDir } from './helpers/fixtures.ts';

const METHODS = ['get', 'post', 'put', 'patch', 'delete'];

test('every ECR route is in openapi.json and every documented operation is a route', async (t) => {
  // The routes do not call the service while they are registered.
  const app = buildEcrApp({ service: {} as PosService, token: 'x'.repeat(32) });
  await app.ready();
  const served = ecrRoutes(app)
    .map((r) => `${r.method} ${r.url.replace(/:([A-Za-z]+)/g, '{$1}')}`)
    .sort();
  const doc = JSON.parse(readFileSync(OPENAPI_PATH, 'utf8')) as { openapi: string; paths: Record<string, Record<string, unknown>> };
  t.regex(doc.openapi, /^3\./);
  const documented = Object.entries(doc.paths)
    .flatMap(([path, ops]) =>
      Object.keys(ops)
        .filter((m) => METHODS.includes(m))
        .map((m) => `${m.toUpperCase()} ${path}`),
    )
    .sort();
  t.true(served.length >= 10, served.join('\n'));
  t.deepEqual(served, documented);
  const r = await app.inject({ method: 'GET', url: '/v1/openapi.json' });
  t.is(r.statusCode, 200);
  t.deepEqual(JSON.parse(r.body), doc);
  // Every route under /v1 but the document needs the token.
  for (const route of ecrRoutes(app).filter((x) => x.url.startsWith('/v1/') && x.url !== '/v1/openapi.json')) {
    const res = await app.inject({ method: route.method as 'GET', url: route.url.replace(':reference', 'r1') });
    t.is(res.statusCode, 401, `${route.method} ${route.url}`);
  }
  await app.close();
});

test('the ECR token: created 0600, refused when others can read it; compared exactly', (t) => {
  const tmp = tempDir('dt-pos-token-');
  try {
    const a = ecrToken(tmp.dir);
    t.is(statSync(join(tmp.dir, 'ecr.token')).mode & 0o777, 0o600);
    t.is(ecrToken(tmp.dir), a, 'the same token at the next start');
    t.true(tokenMatches(a, a));
    t.false(tokenMatches(a.slice(0, -1), a));
    t.false(tokenMatches(a + 'x', a));
    t.false(tokenMatches('', a));
    chmodSync(join(tmp.dir, 'ecr.token'), 0o644);
    t.throws(() => ecrToken(tmp.dir), { message: /readable by others/ });
  } finally {
    tmp.cleanup();
  }
});
