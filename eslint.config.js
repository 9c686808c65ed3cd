// ESLint (flat config), `npm run lint`, part of `npm test`. The rules catch real problems:
// ESLint's and typescript-eslint's recommended sets; the type-aware rules about promises
// (floating, misused, awaited non-promises, returned un-awaited inside try) and thrown or
// rejected values, which need the type checker (one program: the root tsconfig.json); and
// import-x for import cycles, self and duplicate imports, and imports of packages that the
// nearest package.json does not declare (a packed package would not find them). Formatting
// is Prettier's job (`npm run format:check`), so no style rules here.
import js from '@eslint/js';
import { defineConfig, globalIgnores } from 'eslint/config';
import { createNodeResolver, importX } from 'eslint-plugin-import-x';
import globals from 'globals';
import tseslint from 'typescript-eslint';

const WORKSPACES = ['protocol', 'firmware', 'card-applet-sim', 'terminal', 'ledger', 'acquirer', 'hardware-tests', 'bank', 'test'];

export default defineConfig(
  globalIgnores(['**/dist/', '**/node_modules/', '.tmp/', 'bench-results/', 'lab-report-*/', 'lab-replay-*/']),
  js.configs.recommended,
  tseslint.configs.recommended,
  {
    rules: {
      // As tsc's noUnusedLocals/noUnusedParameters: a leading underscore marks a deliberate unused name.
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', ignoreRestSiblings: true }],
      // Tests match aligned CLI output (`/Total  2/`); `/Total {2}2/` would hide what is matched.
      'no-regex-spaces': 'off',
    },
  },
  {
    files: ['**/*.ts'],
    languageOptions: { parserOptions: { project: './tsconfig.json', tsconfigRootDir: import.meta.dirname } },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/await-thenable': 'error',
      '@typescript-eslint/return-await': ['error', 'error-handling-correctness-only'],
      '@typescript-eslint/only-throw-error': 'error',
      // Passing on an unknown reason (an abort signal's, a caught error) as it came is fine.
      '@typescript-eslint/prefer-promise-reject-errors': ['error', { allowThrowingAny: true, allowThrowingUnknown: true }],
      '@typescript-eslint/no-for-in-array': 'error',
      '@typescript-eslint/no-implied-eval': 'error',
      '@typescript-eslint/switch-exhaustiveness-check': ['error', { considerDefaultExhaustiveForUnions: true }],
    },
  },
  {
    files: ['**/test/**/*.ts', 'test/**/*.ts'],
    // Tests read the JSON that CLIs print; typing every document would add nothing.
    rules: { '@typescript-eslint/no-explicit-any': 'off' },
  },
  {
    files: ['**/*.js', '**/*.mjs'],
    languageOptions: { globals: globals.node },
  },
  {
    // The attendant screen of dt-pos serve runs in the browser.
    files: ['terminal/screen/**/*.js'],
    languageOptions: { globals: globals.browser, sourceType: 'script' },
  },
  {
    plugins: { 'import-x': importX },
    settings: {
      // Which files import-x reads to follow imports, and with which parser.
      'import-x/extensions': ['.ts', '.mjs', '.js'],
      'import-x/parsers': { '@typescript-eslint/parser': ['.ts'] },
      // The workspace packages resolve to their sources, as under tsx (the dt-source condition).
      'import-x/resolver-next': [
        createNodeResolver({ conditionNames: ['dt-source', 'types', 'import', 'node', 'default'], extensions: ['.ts', '.mjs', '.js'] }),
      ],
    },
    rules: {
      // Cycles among the repo's own files (the architecture test also checks across packages, type imports included).
      'import-x/no-cycle': ['error', { ignoreExternal: true }],
      'import-x/no-self-import': 'error',
      'import-x/no-duplicates': 'error',
      // Shipped code (src/, bin/) may use only its package's dependencies.
      'import-x/no-extraneous-dependencies': ['error', { devDependencies: false }],
    },
  },
  // Tests, benchmarks and scripts may also use devDependencies, their package's and the root's.
  ...WORKSPACES.map((ws) => ({
    files: [`${ws}/test/**`, `${ws}/bench/**`, `${ws}/scripts/**`, ...(ws === 'test' ? ['test/**'] : [])],
    rules: {
      'import-x/no-extraneous-dependencies': [
        'error',
        { devDependencies: true, packageDir: [import.meta.dirname, `${import.meta.dirname}/${ws}`] },
      ],
    },
  })),
  {
    files: ['scripts/**', 'eslint.config.js'],
    rules: { 'import-x/no-extraneous-dependencies': ['error', { devDependencies: true }] },
  },
  {
    // The worker bootstrap that only the sources load (under tsx); the build runs validate-worker.js.
    files: ['ledger/src/validate-worker.mjs'],
    rules: { 'import-x/no-extraneous-dependencies': 'off' },
  },
);
