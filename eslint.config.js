import js from '@eslint/js';
import tseslint from 'typescript-eslint';

const SIDES = ['**/functions/**', '**/agents/**', '**/local/**', '**/cli/**', '**/cdk/**'];
const SDKS = ['@aws-sdk/*', 'dockerode'];
const AGENT_FORBIDS = ['**/functions/**', '**/local/**', '**/cli/**', '**/cdk/**'];
const FUNCTION_FORBIDS = ['**/agents/**', '**/local/**', '**/cli/**', '**/cdk/**'];
const DOMAIN_FORBIDS = [...SDKS, '**/adapters/**', '**/drivers/**'];
const KERNEL = 'the shared kernel imports no side (and only kernel/adapters/ an SDK)';
const AGENTS =
  'agents/ imports only the kernel (kernel/, statemachines/contracts), never functions/';
const FUNCTIONS =
  'functions/ imports only the kernel (kernel/, statemachines/contracts), never agents/';
const DOMAIN = 'the pure domain imports no SDK, adapter or driver';
const CONSOLE =
  'the web console is a client of the HTTP API: it imports only the shared kernel (name rules, option schemas, types)';
const CLI =
  'the CLI is a client of the HTTP API: it imports the kernel, and loads the agent or local mode with a dynamic import() only when `stowage agent` or `stowage start` runs';

/** One layering rule: files matching `files` may not import `patterns` (type imports too, unless `typesAllowed`). */
function layer(files, patterns, message, typesAllowed = false) {
  return [
    {
      files,
      rules: {
        '@typescript-eslint/no-restricted-imports': [
          'error',
          { patterns: [{ group: patterns, message, allowTypeImports: typesAllowed }] },
        ],
      },
    },
  ];
}

export default tseslint.config(
  { ignores: ['node_modules/**', 'cdk.out/**', 'dist/**', '**/*.d.ts'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: { globals: { process: 'readonly', console: 'readonly' } },
    rules: {
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_' },
      ],
    },
  },
  {
    // The pure domain imports no SDK and reads no environment (STYLE.md, Boundaries).
    files: ['functions/core/**/*.ts', 'agents/core/**/*.ts'],
    rules: {
      'no-restricted-properties': ['error', { object: 'process', property: 'env' }],
    },
  },
  // The layering of DESIGN.md ("Code layout"): the shared kernel (kernel/, and the payload
  // contracts in statemachines/contracts.ts) imports no side; agents/ and functions/ import the
  // kernel and never each other; the CLI speaks HTTP and loads the agent and local mode only
  // when `stowage agent` or `stowage start` runs (a dynamic import); cdk/ imports no runtime code.
  ...layer(['kernel/**/*.ts', 'statemachines/**/*.ts'], [...SIDES, ...SDKS], KERNEL),
  ...layer(['kernel/adapters/**/*.ts'], SIDES, KERNEL),
  ...layer(['agents/**/*.ts'], AGENT_FORBIDS, AGENTS),
  ...layer(['functions/**/*.ts'], FUNCTION_FORBIDS, FUNCTIONS),
  ...layer(['agents/core/**/*.ts'], [...AGENT_FORBIDS, ...DOMAIN_FORBIDS], `${AGENTS}; ${DOMAIN}`),
  ...layer(
    ['functions/core/**/*.ts'],
    [...FUNCTION_FORBIDS, ...DOMAIN_FORBIDS],
    `${FUNCTIONS}; ${DOMAIN}`,
  ),
  ...layer(
    ['console/**/*.ts', 'console/**/*.tsx'],
    ['**/agents/**', '**/functions/**', '**/local/**', '**/cli/**', '**/cdk/**', ...SDKS],
    CONSOLE,
    true,
  ),
  ...layer(
    ['cli/**/*.ts'],
    ['**/agents/**', '**/functions/**', '**/local/**', '**/cdk/**'],
    CLI,
    true,
  ),
  ...layer(
    ['cdk/**/*.ts'],
    [
      '**/functions/**',
      '**/agents/**',
      '**/local/**',
      '**/cli/**',
      '**/kernel/**',
      '!**/kernel/resources',
    ],
    'cdk/ points at runtime code by path; it imports only kernel/resources.ts',
  ),
);
