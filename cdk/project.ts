/**
 * Where the CDK app finds what it deploys, and the defaults every construct shares. cdk/ never
 * imports runtime code (only the plain data of kernel/resources.ts): it points at
 * handler entry files and ASL files by path, resolved from this file so that `cdk synth`, vitest
 * and tsx agree whatever the working directory.
 */
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { RetentionDays } from 'aws-cdk-lib/aws-logs';

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** functions/<folder>/handler.ts: one folder per Lambda. */
export function handlerEntry(folder: string): string {
  return join(REPO_ROOT, 'functions', folder, 'handler.ts');
}

/** statemachines/<file>: the ASL files are the single source of truth for the workflows. */
export function aslFile(file: string): string {
  return join(REPO_ROOT, 'statemachines', file);
}

/**
 * Function, state machine and API access logs. A month covers the time from a failed nightly
 * backup to somebody looking at it, without keeping execution traces indefinitely. Log groups are
 * destroyed with the stack (unlike the table and the bucket): they hold diagnostics, not data.
 */
export const LOG_RETENTION = RetentionDays.ONE_MONTH;
