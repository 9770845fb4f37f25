/**
 * The stack deploys the web console's build (dist/console/), read at synth time. CI builds it
 * (`npm run build:console`) before the tests; a test run without it builds it here once, so
 * `npm run test:unit` works in a fresh checkout. Imported first by every test/cdk file.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { CONSOLE_BUILD_DIR } from '../../cdk/constructs/web-console';
import { buildConsole } from '../fixtures/browser';

if (!existsSync(join(CONSOLE_BUILD_DIR, 'index.html'))) buildConsole();
