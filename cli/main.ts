/**
 * `stowage`: the command line. Every command but `start` and `agent` is a client of the HTTP API.
 * Exit codes: 0 done; 1 the job failed; 2 the request was refused (bad input, not found, taken);
 * 3 the API could not be reached; 4 a backup of several targets ended PARTIALLY_FAILED (some
 * points were made, some targets failed).
 */
import { pollDelay } from './poll';
import './warnings';
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { Command, InvalidArgumentError, Option } from 'commander';
import pkg from '../package.json' with { type: 'json' };
import type { AgentRecord, Job, JobLog, JobLogLine } from '../kernel/model';
import type { RestorePlanAnswer } from '../kernel/platforms/restore-plan';
import type { JobAccepted } from '../functions/core/requests/launch';
import type { SnapshotRestorePlan } from '../functions/core/requests/snapshot';

import type { AgentConfig } from '../agents/worker/main';
import type { LocalConfig } from '../local/control-plane';
import { ApiClient, ApiError, DEFAULT_API, DEFAULT_PORT, Unreachable } from './client';
import { commandWord, needsRegistry } from './argv';
import { ProgressReporter } from './progress';
import {
  bytes,
  itemsTable,
  jobDetail,
  jobLogNotes,
  logLineText,
  jobsTable,
  planText,
  snapshotPlanText,
  pointsTable,
  pruneText,
  restoreTestText,
  scheduleText,
  snapshotsTable,
  table,
  type ListedPoint,
  type SnapshotTarget,
} from './format';

const TERMINAL = ['SUCCEEDED', 'FAILED', 'PARTIALLY_FAILED', 'CANCELLED'];

/**
 * The platform registry (kernel/platforms) keeps its zod schemas beside the flags, ~50 ms of
 * start-up: it is loaded only when the command being run takes platform or engine flags, or
 * when help may list them, so `stowage jobs` and `stowage --version` never pay for it. The other
 * commands are then defined without those flags, which they do not take.
 */
const word = commandWord(process.argv.slice(2));
const registry = needsRegistry(word) ? await import('./platform-flags') : undefined;

function loadedRegistry(): typeof import('./platform-flags') {
  if (!registry) throw new Error(`internal: the platform registry is not loaded for ${word}`);
  return registry;
}

const addEngineFlags = (command: Command) => registry?.addEngineFlags(command) ?? command;
const addPlatformFlags = (
  command: Command,
  kind: 'backup' | 'restore',
  defaults?: Record<string, string>,
) => registry?.addPlatformFlags(command, kind, defaults) ?? command;
const enginesOf = (opts: Record<string, unknown>) => loadedRegistry().enginesOf(opts);
const platformBody = (kind: 'backup' | 'restore', flags: Record<string, unknown>) =>
  loadedRegistry().platformBody(kind, flags);

interface Globals {
  json?: boolean;
  api?: string;
}

function client(cmd: Command): ApiClient {
  const g = cmd.optsWithGlobals<Globals>();
  const { dataDir } = cmd.opts<{ dataDir?: string }>();
  return new ApiClient(g.api ?? process.env.STOWAGE_API ?? DEFAULT_API, localToken(dataDir));
}

/**
 * Local mode's API token: $STOWAGE_TOKEN, else the api-token file `stowage start` wrote in its
 * data directory (the command's --data-dir, else $STOWAGE_DATA_DIR, default ~/.stowage), if
 * this user may read it.
 */
function localToken(given?: string): string | undefined {
  if (process.env.STOWAGE_TOKEN) return process.env.STOWAGE_TOKEN;
  const dataDir = given ?? process.env.STOWAGE_DATA_DIR ?? join(homedir(), '.stowage');
  try {
    return readFileSync(join(dataDir, 'api-token'), 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}

const isJson = (cmd: Command) => Boolean(cmd.optsWithGlobals<Globals>().json);

function print(cmd: Command, value: unknown, human: () => string): void {
  process.stdout.write(isJson(cmd) ? `${JSON.stringify(value, null, 2)}\n` : `${human()}\n`);
}

/** The job did not succeed: exit 4 when it PARTIALLY_FAILED, else 1. */
class JobFailed extends Error {
  constructor(readonly status: string) {
    super(status);
  }
}

async function waitForJob(
  _cmd: Command,
  api: ApiClient,
  jobId: string,
  follow: boolean,
): Promise<Job> {
  // Progress goes to stderr whatever --json says: stdout keeps only the result.
  const progress = follow ? new ProgressReporter(process.stderr, jobId) : undefined;
  const since = Date.now();
  try {
    for (;;) {
      const job = await api.get<Job>(`/jobs/${encodeURIComponent(jobId)}`);
      progress?.update(job);
      if (TERMINAL.includes(job.status)) return job;
      await new Promise((r) => setTimeout(r, pollDelay(Date.now() - since, job.progress)));
    }
  } finally {
    progress?.end();
  }
}

/** What a finished snapshot job did, in words. */
function snapshotOutcome(job: Job): string {
  const result = job.snapshot?.result;
  const expires = (at: string | null | undefined) => (at ? `expires ${at}` : 'never expires');
  switch (result?.action) {
    case 'create':
      return `snapshot ${job.recoveryPointId} created (${expires(result.snapshot?.expiresAt)}${result.snapshot?.stateful ? ', stateful' : ''})`;
    case 'expire':
      return `snapshot ${job.recoveryPointId} now ${expires(result.snapshot?.expiresAt)}`;
    case 'delete':
      return `snapshot ${job.recoveryPointId} deleted`;
    case 'restore':
      return `${job.target} restored to snapshot ${job.recoveryPointId}`;
    case 'schedule':
      return `snapshot schedule of ${job.target}: ${scheduleText(result.schedule ?? null)}`;
    default:
      return `snapshot job ${job.jobId} SUCCEEDED`;
  }
}

/** A backup by selector, or of several targets: its outcome is per item. */
const isMultiTarget = (job: Job) =>
  job.kind === 'BACKUP' &&
  job.items !== undefined &&
  (job.items.length > 1 || !job.recoveryPointId);

function finish(cmd: Command, job: Job, extra: Record<string, unknown> = {}): void {
  const snapshot = job.kind === 'SNAPSHOT';
  const multi = isMultiTarget(job);
  const out = {
    jobId: job.jobId,
    kind: job.kind,
    target: job.target,
    status: job.status,
    // A point that lacks failed parts (a vApp's child) is still a point: PARTIALLY_FAILED.
    ...(job.kind === 'BACKUP' &&
    job.recoveryPointId &&
    (job.status === 'SUCCEEDED' || (job.status === 'PARTIALLY_FAILED' && !multi))
      ? { recoveryPointId: job.recoveryPointId }
      : {}),
    ...(snapshot && job.snapshot?.action !== 'schedule' ? { snapshotId: job.recoveryPointId } : {}),
    ...(snapshot && job.snapshot?.result ? { snapshot: job.snapshot.result } : {}),
    ...(multi
      ? {
          items: job.items!.map((i) => ({
            target: i.target,
            agent: i.agent,
            recoveryPointId: i.recoveryPointId,
            status: i.status,
            ...(i.error ? { error: i.error } : {}),
          })),
        }
      : {}),
    ...(job.error ? { error: job.error } : {}),
    ...(job.warnings ? { warnings: job.warnings } : {}),
    ...(job.prune ? { prune: job.prune } : {}),
    ...(job.restoreTest
      ? { recoveryPointId: job.recoveryPointId, restoreTest: job.restoreTest }
      : {}),
    ...extra,
  };
  const warned = (text: string) =>
    [text, ...(job.warnings ?? []).map((w) => `warning: ${w}`)].join('\n');
  print(cmd, out, () => {
    if (multi) {
      const done = job.items!.filter((i) => i.status === 'COMPLETED').length;
      return `backup of ${job.target} ${job.status}: ${done} of ${job.items!.length} targets backed up\n${itemsTable(job.items!)}`;
    }
    return warned(
      job.status === 'SUCCEEDED'
        ? job.kind === 'BACKUP'
          ? `backup of ${job.target} SUCCEEDED: recovery point ${job.recoveryPointId} (${bytes(job.progress?.bytesDone)})`
          : snapshot
            ? snapshotOutcome(job)
            : job.kind === 'PRUNE'
              ? pruneText(job)
              : job.kind === 'VERIFY'
                ? `verify SUCCEEDED: ${job.recoveryPointId} of ${job.target} read back whole (${bytes(job.progress?.bytesDone)})`
                : job.kind === 'RESTORE_TEST'
                  ? `restore test PASSED: ${job.recoveryPointId} of ${job.source} ran in sandbox ${job.target} (${restoreTestText(job.restoreTest)}); the sandbox was ${job.restoreTest?.removed === false ? 'NOT removed yet (the agent retries)' : 'removed'}`
                  : `restore SUCCEEDED: ${job.target} restored from ${job.recoveryPointId}`
        : job.kind === 'RESTORE_TEST'
          ? `restore test of ${job.recoveryPointId} (${job.source}) ${job.status}${job.error ? `: ${job.error.name}: ${job.error.message}` : ''}${job.restoreTest ? ` (${restoreTestText(job.restoreTest)})` : ''}`
          : `${snapshot ? `snapshot ${job.snapshot?.action ?? ''}` : job.kind.toLowerCase()} of ${job.target} ${job.status}${job.error ? `: ${job.error.name}: ${job.error.message}` : ''}`,
    );
  });
  if (job.status !== 'SUCCEEDED') throw new JobFailed(job.status);
}

/**
 * Starts a job through the API; prints its id, or with `wait` follows it to the end and prints
 * the outcome (throwing JobFailed, for the exit code, when it did not succeed).
 */
async function startJob(
  cmd: Command,
  path: string,
  body: unknown,
  wait: boolean | undefined,
  describe: (job: JobAccepted) => string,
): Promise<void> {
  const api = client(cmd);
  const job = await api.post<JobAccepted>(path, body);
  if (!wait) {
    print(
      cmd,
      {
        jobId: job.jobId,
        status: job.status,
        target: job.target,
        agent: job.agent,
        ...(job.items && !job.recoveryPointId ? { items: job.items } : {}),
      },
      () => `${job.jobId}`,
    );
    return;
  }
  process.stderr.write(`${describe(job)} started as ${job.jobId}\n`);
  finish(cmd, await waitForJob(cmd, api, job.jobId, true));
}

const program = new Command('stowage')
  .description('Backup and restore for Docker, LXD and vSphere')
  .version(pkg.version, '-V, --version', 'print the version')
  .option('--json', 'print one JSON document on stdout')
  .option('--api <url>', `the Stowage HTTP API (default $STOWAGE_API or ${DEFAULT_API})`)
  .showHelpAfterError();

const startCommand = program
  .command('start')
  .description('local mode: control plane, API and an agent for the engines on this host')
  .option(
    '--data-dir <dir>',
    'where all state lives',
    process.env.STOWAGE_DATA_DIR ?? join(homedir(), '.stowage'),
  )
  .addOption(
    new Option('--port <n>', 'API port; the emulators use the next four')
      .default(DEFAULT_PORT)
      .argParser(Number),
  )
  .option('--no-agent', 'do not run an agent in this process')
  .option('--store <dir>', 'keep the repository in this directory (default: <data-dir>/store)')
  .option(
    '--s3-store',
    "keep the repository in the local S3 server instead (the agent's S3 code path, as in AWS)",
  )
  .option('--site <name>', 'site name of the embedded agent', 'local')
  .option(
    '--paths <dirs>',
    'the embedded agent backs up and restores path: targets only inside these trees (comma-separated; default: any path)',
    process.env.STOWAGE_PATHS,
  )
  .addOption(concurrencyOption())
  .addOption(holdSweepOption());
addEngineFlags(startCommand).action(
  async (opts: {
    dataDir: string;
    port: number;
    agent: boolean;
    site: string;
    store?: string;
    s3Store?: boolean;
    paths?: string;
    concurrency: number;
    holdSweepSeconds?: number;
  }) => {
    const { startControlPlane } = await import('../local/control-plane');
    const plane = await startControlPlane({
      dataDir: opts.dataDir,
      port: opts.port,
      agent: opts.agent,
      site: opts.site,
      agentOptions: {
        concurrency: opts.concurrency,
        ...(opts.holdSweepSeconds ? { holdSweepMs: opts.holdSweepSeconds * 1000 } : {}),
        engines: enginesOf(opts),
        ...(opts.paths !== undefined ? { paths: pathList(opts.paths) } : {}),
      },
      ...(opts.store ? { storeDir: opts.store } : {}),
      ...(opts.s3Store ? { s3Store: true } : {}),
    });
    process.stdout.write(
      `Stowage is running in local mode.\n  API:      ${plane.apiUrl}\n  console:  ${
        plane.console.built
          ? plane.console.url
          : `not built (run npm run build:console, then open ${plane.console.url})`
      }\n  data dir: ${opts.dataDir}\n  store:    ${
        plane.localConfig.store.kind === 'dir' ? plane.localConfig.store.path : 'local S3 server'
      }\n  key file: ${plane.localConfig.keyFile} (keep a copy: without it the backups cannot be read)\n  agent:    ${
        plane.agent
          ? `${plane.agent.site} (${plane.agent.platforms.join(', ') || 'no engines found'})`
          : 'none'
      }\nStop with Ctrl-C.\n`,
    );
    await untilSignal();
    await plane.close();
  },
);

const agentCommand = program
  .command('agent')
  .description('run an agent on its own (local mode, or AWS with STOWAGE_QUEUE_URL etc. set)')
  .option('--site <name>', 'the site this agent serves', process.env.STOWAGE_SITE ?? 'local')
  .option(
    '--data-dir <dir>',
    'where the agent keeps its state (the journal of its holds, in holds/<site>); in local mode also where `stowage start` wrote agent-config.json',
    process.env.STOWAGE_DATA_DIR ?? join(homedir(), '.stowage'),
  )
  .option(
    '--config <file>',
    'local mode: the agent-config.json `stowage start` wrote (0600; default DATA_DIR/agent-config.json)',
  )
  .option(
    '--paths <dirs>',
    'back up and restore path: targets only inside these trees (comma-separated; default: any path)',
    process.env.STOWAGE_PATHS,
  )
  .addOption(concurrencyOption())
  .addOption(holdSweepOption());
addEngineFlags(agentCommand)
  .option(
    '--check',
    'say whether this agent reaches its queue, the catalog, the store, its key and each engine, and what to fix; take no task',
  )
  .action(
    async (
      opts: {
        site: string;
        dataDir: string;
        config?: string;
        paths?: string;
        concurrency: number;
        holdSweepSeconds?: number;
        check?: boolean;
      },
      cmd: Command,
    ) => {
      if (opts.check) return checkAgentCommand(opts, cmd);
      const { startAgent } = await import('../agents/worker/main');
      const { createLogger } = await import('../kernel/logger');
      const log = createLogger({ service: 'stowage-agent' });
      const config = await agentConfig(opts.site, agentConfigFile(opts));
      const agent = await startAgent(
        {
          ...config,
          engines: enginesOf(opts),
          ...(opts.paths !== undefined ? { paths: pathList(opts.paths) } : {}),
          concurrency: opts.concurrency,
          ...(opts.holdSweepSeconds ? { holdSweepMs: opts.holdSweepSeconds * 1000 } : {}),
          holdsDir: join(opts.dataDir, 'holds', opts.site),
          parentsDir: join(opts.dataDir, 'parents', opts.site),
        },
        log,
      );
      process.stderr.write(
        `agent ${agent.site} running (${agent.platforms.join(', ') || 'no engines found'}); Ctrl-C stops it\n`,
      );
      await untilSignal();
      await agent.stop();
    },
  );

/** `--paths /a,/b`: the trees path: targets are limited to (at least one). */
function pathList(text: string): string[] {
  const paths = text
    .split(',')
    .map((p) => p.trim())
    .filter((p) => p !== '');
  if (paths.length === 0) {
    throw new Error('--paths needs at least one absolute path, e.g. --paths /srv,/home');
  }
  return paths;
}

/** Local mode's agent-config.json: --config, else the one in --data-dir. */
const agentConfigFile = (opts: { dataDir: string; config?: string }) =>
  opts.config ?? join(opts.dataDir, 'agent-config.json');

/**
 * A standalone agent's configuration: from the environment in AWS (STOWAGE_QUEUE_URL and the
 * stack's other outputs), else from the agent-config.json `stowage start` wrote (`file`).
 */
async function agentConfig(site: string, file: string): Promise<AgentConfig> {
  if (process.env.STOWAGE_QUEUE_URL) {
    const kmsKeyId = process.env.STOWAGE_KMS_KEY_ID;
    const keyFile = process.env.STOWAGE_KEY_FILE;
    if (!kmsKeyId && !keyFile) {
      throw new Error('set STOWAGE_KMS_KEY_ID (the stack output DataKeyId) or STOWAGE_KEY_FILE');
    }
    return {
      site,
      queueUrl: process.env.STOWAGE_QUEUE_URL,
      tableName: required('STOWAGE_TABLE'),
      store: { kind: 's3', bucket: required('STOWAGE_BUCKET') },
      keys: kmsKeyId ? { kind: 'kms', keyId: kmsKeyId } : { kind: 'file', path: keyFile! },
    };
  }
  return localAgentConfig(file, site);
}

/**
 * A standalone local agent's configuration, from the agent-config.json `stowage start` wrote
 * (0600; never from whatever answers on a port): the emulators' credentials of this start and
 * where they are; its site's queue is created with those credentials.
 */
async function localAgentConfig(file: string, site: string): Promise<AgentConfig> {
  let local: LocalConfig;
  try {
    local = JSON.parse(readFileSync(file, 'utf8')) as LocalConfig;
  } catch (err) {
    throw new Error(
      `cannot read the local agent configuration ${file} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}): start \`stowage start\` first, and give its --data-dir (or --config FILE) as a user who may read it (it is 0600); for AWS set STOWAGE_QUEUE_URL`,
    );
  }
  if (!local.credentials?.accessKeyId || !local.endpoints?.sqs) {
    throw new Error(`${file} is not an agent-config.json written by \`stowage start\``);
  }
  const { agentHeartbeatMs } = await import('../agents/worker/main');
  const { SQSClient } = await import('@aws-sdk/client-sqs');
  const { createSiteQueue } = await import('../local/emulators');
  const sqs = new SQSClient({
    region: local.region,
    credentials: { ...local.credentials },
    endpoint: local.endpoints.sqs,
  });
  try {
    return {
      site,
      queueUrl: await createSiteQueue(sqs, site),
      tableName: local.tableName,
      store: local.store,
      keys: { kind: 'file', path: local.keyFile },
      aws: {
        region: local.region,
        credentials: { ...local.credentials },
        endpoints: local.endpoints,
      },
      ...(local.heartbeatSeconds ? { heartbeatMs: agentHeartbeatMs(local.heartbeatSeconds) } : {}),
    };
  } finally {
    sqs.destroy();
  }
}

/** `stowage agent --check`: a table of checks and what to fix; exit 1 when one failed. */
async function checkAgentCommand(
  opts: { site: string; dataDir: string; config?: string },
  cmd: Command,
): Promise<void> {
  const { checkAgent } = await import('../agents/worker/check');
  let results: Awaited<ReturnType<typeof checkAgent>>;
  try {
    const config = await agentConfig(opts.site, agentConfigFile(opts));
    results = await checkAgent({ ...config, engines: enginesOf(opts) });
  } catch (err) {
    // Without a configuration there is nothing else to check.
    results = [
      {
        check: 'configuration',
        status: 'failed',
        detail: (err as Error).message,
        fix: process.env.STOWAGE_QUEUE_URL
          ? 'set the variables the message names (the stack outputs; in the systemd unit, the EnvironmentFile)'
          : 'in AWS set STOWAGE_QUEUE_URL, STOWAGE_TABLE, STOWAGE_BUCKET and STOWAGE_KMS_KEY_ID; in local mode start `stowage start` on this host first',
      },
    ];
  }
  const failed = results.filter((r) => r.status === 'failed');
  print(cmd, { site: opts.site, ok: failed.length === 0, checks: results }, () =>
    [
      table([['CHECK', 'STATUS', 'DETAIL'], ...results.map((r) => [r.check, r.status, r.detail])]),
      ...results
        .filter((r) => r.fix && r.status !== 'ok')
        .map((r) => `${r.status === 'failed' ? 'fix' : 'note'} ${r.check}: ${r.fix}`),
      failed.length === 0
        ? `agent ${opts.site} is ready to run`
        : `agent ${opts.site} is not ready: ${failed.length} check(s) failed`,
    ].join('\n'),
  );
  if (failed.length > 0) process.exitCode = 1;
}

program
  .command('targets')
  .description('what the agents can see')
  .option('--platform <p>', 'only this platform (docker, lxd, vsphere, ...)')
  .action(async (opts: { platform?: string }, cmd: Command) => {
    const q = opts.platform ? `?platform=${encodeURIComponent(opts.platform)}` : '';
    const targets = await client(cmd).get<
      Array<{ target: string; state: string; agent: string; details?: Record<string, string> }>
    >(`/targets${q}`);
    print(cmd, targets, () =>
      targets.length === 0
        ? 'no targets: no agent has reported any (is an agent running?)'
        : table([
            ['TARGET', 'STATE', 'AGENT', 'DETAILS'],
            ...targets.map((t) => [
              t.target,
              t.state,
              t.agent,
              Object.entries(t.details ?? {})
                .map(([k, v]) => `${k}=${v}`)
                .join(' '),
            ]),
          ]),
    );
  });

program
  .command('agents')
  .description('the agents that have reported, and when')
  .action(async (_opts: unknown, cmd: Command) => {
    const agents = await client(cmd).get<AgentRecord[]>('/agents');
    print(cmd, agents, () =>
      table([
        ['AGENT', 'PLATFORMS', 'TARGETS', 'SEEN'],
        ...agents.map((a) => [a.agent, a.platforms.join(','), String(a.targets.length), a.seenAt]),
      ]),
    );
  });

interface BackupFlags {
  wait?: boolean;
  [flag: string]: unknown;
}

/** The backup request body from the command's flags (the API validates it). */
function backupBody(target: string, flags: BackupFlags, label?: string): Record<string, unknown> {
  return { target, ...platformBody('backup', flags), ...(label ? { label } : {}) };
}

const collect = (value: string, previous: string[] = []) => [...previous, value];

function withBackupFlags(command: Command, defaultConsistency?: string): Command {
  command.option('--wait', 'wait for the job and print the recovery point');
  return addPlatformFlags(
    command,
    'backup',
    defaultConsistency ? { consistency: defaultConsistency } : {},
  );
}

withBackupFlags(
  program
    .command('backup [target]')
    .description(
      'start a backup of PLATFORM:NAME[@AGENT], or with --selector of every container whose labels match; prints the job id',
    )
    .option(
      '--selector <selector>',
      'docker:KEY=VALUE[,KEY=VALUE...][@AGENT]: every container with all these labels, one point each',
    ),
).action(
  async (target: string | undefined, opts: BackupFlags & { selector?: string }, cmd: Command) => {
    if ((target === undefined) === (opts.selector === undefined)) {
      throw new Error(
        'give a TARGET (docker:web) or --selector docker:KEY=VALUE, not both and not neither',
      );
    }
    const body = backupBody(target ?? '', opts);
    if (opts.selector !== undefined) {
      delete body.target;
      body.selector = opts.selector;
    }
    await startJob(cmd, '/backups', body, opts.wait, (job) =>
      job.items && !job.recoveryPointId
        ? `backup of ${job.target} (${job.items.map((i) => i.target).join(', ')})`
        : `backup of ${job.target}`,
    );
  },
);

withBackupFlags(
  program
    .command('protect-update <target>')
    .description('before an update: a recovery point marked pre-update (stopped while captured)'),
  'stop',
).action(async (target: string, opts: BackupFlags, cmd: Command) => {
  await startJob(
    cmd,
    '/backups',
    backupBody(target, opts, 'pre-update'),
    opts.wait,
    (job) => `pre-update backup of ${job.target}`,
  );
});

interface PolicyFlags extends BackupFlags {
  target?: string[];
  selector?: string[];
  schedule?: string;
  timezone?: string;
  flexibleWindow?: number;
  keepLast?: number;
  keepHourly?: number;
  keepDaily?: number;
  keepWeekly?: number;
  keepMonthly?: number;
  keepYearly?: number;
  keepWithin?: string;
  verifyEvery?: number;
  restoreTestEvery?: number;
  restoreTestProbe?: string;
}

/** A policy body from the flags given (an update sends only those). */
function policyBody(flags: PolicyFlags): Record<string, unknown> {
  const targets = [...(flags.target ?? []), ...(flags.selector ?? [])];
  const retention = Object.fromEntries(
    (
      [
        'keepLast',
        'keepHourly',
        'keepDaily',
        'keepWeekly',
        'keepMonthly',
        'keepYearly',
        'keepWithin',
      ] as const
    )
      .filter((k) => flags[k] !== undefined)
      .map((k) => [k, flags[k]]),
  );
  const { target: _t, ...options } = backupBody('', flags);
  return {
    ...(targets.length ? { targets } : {}),
    ...(flags.schedule !== undefined ? { schedule: flags.schedule } : {}),
    ...(flags.timezone !== undefined ? { timezone: flags.timezone } : {}),
    ...(flags.flexibleWindow !== undefined ? { flexibleWindowMinutes: flags.flexibleWindow } : {}),
    ...(Object.keys(retention).length ? { retention } : {}),
    ...(Object.keys(options).length ? { options } : {}),
    ...(flags.verifyEvery !== undefined ? { verifyEvery: flags.verifyEvery } : {}),
    ...(flags.restoreTestEvery !== undefined ? { restoreTestEvery: flags.restoreTestEvery } : {}),
    ...(flags.restoreTestProbe !== undefined ? { restoreTestProbe: flags.restoreTestProbe } : {}),
  };
}

function withPolicyFlags(command: Command): Command {
  const count = (flag: string, what: string) =>
    new Option(`--${flag} <n>`, what).argParser((v) => Number(v));
  return withBackupFlags(
    command
      .option('--target <target>', 'PLATFORM:NAME[@AGENT] to back up (repeatable)', collect)
      .option(
        '--selector <selector>',
        'docker:KEY=VALUE[,...]: containers by label (repeatable)',
        collect,
      )
      .option(
        '--schedule <expr>',
        'EventBridge Scheduler: cron(0 3 * * ? *), rate(6 hours), at(...)',
      )
      .option(
        '--timezone <tz>',
        'IANA time zone of the schedule and retention periods (default UTC)',
      )
      .addOption(count('flexible-window', 'minutes EventBridge may start it late (AWS; default 0)'))
      .addOption(count('keep-last', 'keep the N newest points of each target'))
      .addOption(count('keep-hourly', 'the newest point of each of the last N hours'))
      .addOption(count('keep-daily', 'the newest point of each of the last N days'))
      .addOption(count('keep-weekly', 'the newest point of each of the last N ISO weeks'))
      .addOption(count('keep-monthly', 'the newest point of each of the last N months'))
      .addOption(count('keep-yearly', 'the newest point of each of the last N years'))
      .option('--keep-within <duration>', 'every point within 1y2m3d4h of the newest')
      .addOption(count('verify-every', 'verify the points of every Nth run'))
      .addOption(
        count('restore-test-every', 'restore-test the Docker and LXD points of every Nth run'),
      )
      .option('--restore-test-probe <command>', 'the probe those restore tests run (sh -c)'),
  );
}

interface ListedPolicy {
  name: string;
  targets: string[];
  schedule: string;
  timezone: string;
  retention: Record<string, unknown>;
  runs: number;
  lastRunAt?: string;
  lastStatus?: string;
  nextRunAt?: string;
  flag?: string;
}

function policiesTable(policies: ListedPolicy[]): string {
  return table([
    ['POLICY', 'SCHEDULE', 'TARGETS', 'RETENTION', 'RUNS', 'LAST RUN', 'NEXT RUN', 'FLAG'],
    ...policies.map((p) => [
      p.name,
      `${p.schedule}${p.timezone !== 'UTC' ? ` ${p.timezone}` : ''}`,
      p.targets.join(' '),
      Object.entries(p.retention)
        .map(([k, v]) => `${k.replace(/^keep/, '').toLowerCase()}=${String(v)}`)
        .join(' ') || 'keep all',
      String(p.runs),
      p.lastRunAt ? `${p.lastRunAt} ${p.lastStatus ?? ''}`.trim() : '-',
      p.nextRunAt ?? 'never',
      p.flag ?? '',
    ]),
  ]);
}

const policy = program
  .command('policy')
  .description('policies: targets, a schedule, retention (create|list|show|update|delete|run)');

withPolicyFlags(policy.command('create <name>').description('create a policy')).action(
  async (name: string, opts: PolicyFlags, cmd: Command) => {
    const created = await client(cmd).post<ListedPolicy>('/policies', {
      name,
      ...policyBody(opts),
    });
    print(cmd, created, () => `policy ${name} created: ${created.schedule} (${created.timezone})`);
  },
);

policy
  .command('list')
  .description('the policies, their next run and whether one needs attention')
  .action(async (_opts: unknown, cmd: Command) => {
    const policies = await client(cmd).get<ListedPolicy[]>('/policies');
    print(cmd, policies, () => (policies.length === 0 ? 'no policies' : policiesTable(policies)));
  });

policy
  .command('show <name>')
  .description('one policy')
  .action(async (name: string, _opts: unknown, cmd: Command) => {
    const p = await client(cmd).get<ListedPolicy>(`/policies/${encodeURIComponent(name)}`);
    print(cmd, p, () => `${policiesTable([p])}\n${JSON.stringify(p, null, 2)}`);
  });

withPolicyFlags(
  policy.command('update <name>').description('change a policy (only the flags given)'),
).action(async (name: string, opts: PolicyFlags, cmd: Command) => {
  const updated = await client(cmd).patch<ListedPolicy>(
    `/policies/${encodeURIComponent(name)}`,
    policyBody(opts),
  );
  print(cmd, updated, () => `policy ${name} updated: ${updated.schedule} (${updated.timezone})`);
});

policy
  .command('delete <name>')
  .description('delete a policy and its schedule (its points stay, kept until deleted)')
  .action(async (name: string, _opts: unknown, cmd: Command) => {
    const out = await client(cmd).delete<unknown>(`/policies/${encodeURIComponent(name)}`);
    print(cmd, out, () => `policy ${name} deleted`);
  });

policy
  .command('run <name>')
  .description('run a policy now: one backup job per target or selector')
  .option('--wait', 'wait for its jobs to finish')
  .action(async (name: string, opts: { wait?: boolean }, cmd: Command) => {
    const api = client(cmd);
    const run = await api.post<{
      jobs: JobAccepted[];
      refused: Array<{ target: string; error: { message: string } }>;
    }>(`/policies/${encodeURIComponent(name)}/runs`, {});
    const ended = opts.wait
      ? await Promise.all(run.jobs.map((j) => waitForJob(cmd, api, j.jobId, false)))
      : [];
    print(cmd, { ...run, ...(opts.wait ? { ended } : {}) }, () =>
      [
        ...run.jobs.map((j) => {
          const done = ended.find((e) => e.jobId === j.jobId);
          return `${j.jobId} backup of ${j.target}${done ? ` ${done.status}` : ''}`;
        }),
        ...run.refused.map((r) => `${r.target}: not started: ${r.error.message}`),
      ].join('\n'),
    );
    if (run.refused.length > 0 || ended.some((e) => e.status !== 'SUCCEEDED')) {
      throw new JobFailed(
        ended.some((e) => e.status === 'SUCCEEDED') ? 'PARTIALLY_FAILED' : 'FAILED',
      );
    }
  });

program
  .command('rollback <target>')
  .description('after an update went wrong: restore the newest pre-update point in place')
  .option('--wait', 'wait for the job to finish')
  .action(async (target: string, opts: { wait?: boolean }, cmd: Command) => {
    await startJob(cmd, '/rollbacks', { target }, opts.wait, (job) => `rollback of ${job.target}`);
  });

const points = program
  .command('points [target]')
  .description(
    'recovery points of both tiers, newest first (of one target, or all): offsite points and local snapshots',
  )
  .addOption(new Option('--tier <tier>', 'only this tier').choices(['offsite', 'snapshot']))
  .action(async (target: string | undefined, opts: { tier?: string }, cmd: Command) => {
    const query = new URLSearchParams();
    if (target) query.set('target', target.replace(/@[^@]*$/, ''));
    if (opts.tier) query.set('tier', opts.tier);
    const q = query.size > 0 ? `?${query.toString()}` : '';
    const points = await client(cmd).get<ListedPoint[]>(`/points${q}`);
    print(cmd, points, () => (points.length === 0 ? 'no recovery points' : pointsTable(points)));
  });

points
  .command('delete <point>')
  .description(
    'delete a recovery point: its catalog item, its manifest, and the chunks no other point references',
  )
  .option('--wait', 'wait for the job to finish')
  .action(async (point: string, opts: { wait?: boolean }, cmd: Command) => {
    await startJob(
      cmd,
      '/points/deletions',
      { recoveryPointId: point },
      opts.wait,
      () => `delete of ${point}`,
    );
  });

program
  .command('prune')
  .description(
    "apply every policy's retention, delete the expired points, then garbage-collect what no kept point references and repack packs that are mostly garbage",
  )
  .option('--dry-run', 'only list what it would delete and repack, and the bytes it would free')
  .option(
    '--repack-below <percent>',
    'repack packs whose chunks kept points use fill less than this share of them (0: never)',
    '50',
  )
  .option('--wait', 'wait for the job and print what it deleted')
  .action(async (opts: { dryRun?: boolean; repackBelow: string; wait?: boolean }, cmd: Command) => {
    const repackBelow = Number(opts.repackBelow);
    await startJob(
      cmd,
      '/prunes',
      {
        dryRun: opts.dryRun === true,
        // A bad value goes to the API, which says what it takes.
        repackBelow: Number.isFinite(repackBelow) ? repackBelow : opts.repackBelow,
      },
      opts.wait,
      () => (opts.dryRun ? 'prune --dry-run' : 'prune'),
    );
  });

const snapshot = program
  .command('snapshot')
  .description(
    'local snapshots (the fast tier beside offsite points): create, list, expire, delete, restore, schedule',
  );

const EXPIRY_HELP = 'never, a duration (30s, 15m, 12h, 7d, 2w) or an ISO 8601 time';

snapshot
  .command('create <target>')
  .description('take a local snapshot of PLATFORM:NAME[@AGENT] (LXD instances)')
  .option('--pattern <pattern>', 'its name; %d becomes the next free number', 'snap%d')
  .option('--expiry <when>', `when it expires: ${EXPIRY_HELP} (default: the instance's own)`)
  .option('--stateful', 'with the running state (needs CRIU on the host; refused otherwise)')
  .option('--wait', 'wait for the job and print the snapshot')
  .action(
    async (
      target: string,
      opts: { pattern: string; expiry?: string; stateful?: boolean; wait?: boolean },
      cmd: Command,
    ) => {
      const body = {
        target,
        pattern: opts.pattern,
        ...(opts.expiry ? { expiry: opts.expiry } : {}),
        ...(opts.stateful ? { stateful: true } : {}),
      };
      await startJob(cmd, '/snapshots', body, opts.wait, (job) => `snapshot of ${job.target}`);
    },
  );

snapshot
  .command('list [target]')
  .description("the local snapshots of one target, or of all, with each target's schedule")
  .action(async (target: string | undefined, _opts: unknown, cmd: Command) => {
    const q = target ? `?target=${encodeURIComponent(target.replace(/@[^@]*$/, ''))}` : '';
    const targets = await client(cmd).get<SnapshotTarget[]>(`/snapshots${q}`);
    print(cmd, targets, () =>
      targets.length === 0 ? 'no target keeps local snapshots' : snapshotsTable(targets),
    );
  });

snapshot
  .command('expire <snapshot>')
  .description('change when a snapshot (TARGET/NAME, e.g. lxd:web/snap0) expires')
  .requiredOption('--expiry <when>', EXPIRY_HELP)
  .option('--wait', 'wait for the job to finish')
  .action(async (id: string, opts: { expiry: string; wait?: boolean }, cmd: Command) => {
    const body = { snapshot: id, expiry: opts.expiry };
    await startJob(cmd, '/snapshots/expiries', body, opts.wait, () => `expiry of ${id}`);
  });

snapshot
  .command('delete <snapshot>')
  .description('delete a snapshot (TARGET/NAME)')
  .option('--wait', 'wait for the job to finish')
  .action(async (id: string, opts: { wait?: boolean }, cmd: Command) => {
    await startJob(
      cmd,
      '/snapshots/deletions',
      { snapshot: id },
      opts.wait,
      () => `delete of ${id}`,
    );
  });

snapshot
  .command('restore <snapshot>')
  .description(
    'put the target back to a snapshot (TARGET/NAME); LXD: running before, running after; vSphere: powered off unless the snapshot has memory or --state running',
  )
  .addOption(
    new Option('--state <state>', 'vSphere: the power state afterwards').choices([
      'running',
      'stopped',
    ]),
  )
  .option(
    '--plan',
    'show what the revert would do (stop, replace, start; the state after); change nothing',
  )
  .option('--wait', 'wait for the job to finish')
  .action(
    async (id: string, opts: { wait?: boolean; state?: string; plan?: boolean }, cmd: Command) => {
      const body = { snapshot: id, ...(opts.state ? { state: opts.state } : {}) };
      if (opts.plan) {
        const plan = await client(cmd).post<SnapshotRestorePlan>('/snapshots/restores', {
          ...body,
          plan: true,
        });
        print(cmd, plan, () => snapshotPlanText(plan));
        return;
      }
      await startJob(cmd, '/snapshots/restores', body, opts.wait, () => `restore to ${id}`);
    },
  );

snapshot
  .command('schedule <target>')
  .description("set the engine's own snapshot schedule of a target (LXD snapshots.schedule)")
  .requiredOption(
    '--every <when>',
    "@hourly, @daily, @weekly, @monthly, a cron expression ('0 3 * * *'), or none to remove it",
  )
  .option('--expiry <duration>', 'how long each scheduled snapshot lives: 15m, 12h, 7d, 2w, never')
  .option('--pattern <pattern>', 'names of scheduled snapshots, with one %d (default snap%d)')
  .option('--stopped', 'also snapshot the instance while it is stopped')
  .option('--wait', 'wait for the job to finish')
  .action(
    async (
      target: string,
      opts: { every: string; expiry?: string; pattern?: string; stopped?: boolean; wait?: boolean },
      cmd: Command,
    ) => {
      const body = {
        target,
        every: opts.every,
        ...(opts.expiry ? { expiry: opts.expiry } : {}),
        ...(opts.pattern ? { pattern: opts.pattern } : {}),
        ...(opts.stopped ? { stopped: true } : {}),
      };
      await startJob(cmd, '/snapshots/schedules', body, opts.wait, () => `schedule of ${target}`);
    },
  );

addPlatformFlags(
  program
    .command('restore <point>')
    .description(
      'restore a recovery point under a new name, in place, or (neither) under its original name when that is free',
    )
    .option('--name <new>', 'restore beside the original under this name')
    .option('--in-place', 'replace the original')
    .option('--to <target>', 'restore as TARGET@AGENT (another name and/or another agent)')
    .option(
      '--plan',
      'show what the restore would do (create, replace, stop, start...); change nothing',
    )
    .option('--wait', 'wait for the job to finish'),
  'restore',
).action(
  async (
    point: string,
    opts: { name?: string; inPlace?: boolean; to?: string; plan?: boolean; wait?: boolean },
    cmd: Command,
  ) => {
    const body = {
      recoveryPointId: point,
      ...(opts.name ? { name: opts.name } : {}),
      ...(opts.inPlace ? { inPlace: true } : {}),
      ...(opts.to ? { to: opts.to } : {}),
      ...platformBody('restore', opts),
    };
    if (opts.plan) {
      const plan = await client(cmd).post<RestorePlanAnswer>('/restores', { ...body, plan: true });
      print(cmd, plan, () => planText(plan));
      return;
    }
    await startJob(
      cmd,
      '/restores',
      body,
      opts.wait,
      (job) => `restore of ${point} to ${job.target}`,
    );
  },
);

program
  .command('ls <point> [path]')
  .description(
    "the files of a point's tree streams (volumes, directories): PATH inside the tree, STREAM/PATH with several",
  )
  .action(async (point: string, path: string | undefined, _opts: unknown, cmd: Command) => {
    const api = client(cmd);
    const job = await api.post<JobAccepted>('/restores', {
      recoveryPointId: point,
      list: path ?? '',
    });
    const done = await waitForJob(cmd, api, job.jobId, false);
    if (done.status !== 'SUCCEEDED' || !done.listing) {
      finish(cmd, done);
      return;
    }
    const listing = done.listing;
    print(cmd, listing, () =>
      [
        table([
          ['TYPE', 'MODE', 'OWNER', 'SIZE', 'MTIME', 'PATH'],
          ...listing.entries.map((e) => [
            e.type,
            e.mode.toString(8).padStart(4, '0'),
            `${e.uid}:${e.gid}`,
            e.type === 'file' ? String(e.size) : '-',
            e.mtime,
            e.link !== undefined ? `${e.path} -> ${e.link}` : e.path,
          ]),
        ]),
        ...(listing.truncated ? ['(more entries: list a narrower path)'] : []),
      ].join('\n'),
    );
  });

program
  .command('verify <point>')
  .description('read every chunk of a recovery point back and check it')
  .option('--wait', 'wait for the job to finish')
  .action(async (point: string, opts: { wait?: boolean }, cmd: Command) => {
    const body = { recoveryPointId: point };
    await startJob(cmd, '/verifications', body, opts.wait, () => `verify of ${point}`);
  });

program
  .command('restore-test <point>')
  .description(
    'restore a Docker or LXD point into an isolated sandbox (no network, no published ports), start it, run a probe inside, record the result and the RTO on the point, remove the sandbox',
  )
  .option('--probe <command>', 'run this (sh -c) inside the sandbox; exit code 0 passes')
  .addOption(
    new Option('--probe-timeout <seconds>', 'how long the probe may run (default 60)').argParser(
      (v) => {
        const n = Number(v);
        if (!Number.isInteger(n) || n < 1)
          throw new InvalidArgumentError('a whole number of seconds');
        return n;
      },
    ),
  )
  .option('--wait', 'wait for the test and print its result')
  .action(
    async (
      point: string,
      opts: { probe?: string; probeTimeout?: number; wait?: boolean },
      cmd: Command,
    ) => {
      const body = {
        recoveryPointId: point,
        ...(opts.probe !== undefined ? { probe: opts.probe } : {}),
        ...(opts.probeTimeout !== undefined ? { probeTimeoutSeconds: opts.probeTimeout } : {}),
      };
      await startJob(cmd, '/restore-tests', body, opts.wait, () => `restore test of ${point}`);
    },
  );

program
  .command('jobs')
  .description('jobs, newest first, with status and progress')
  .option('--limit <n>', 'at most this many', '50')
  .action(async (opts: { limit: string }, cmd: Command) => {
    const jobs = await client(cmd).get<Job[]>(`/jobs?limit=${encodeURIComponent(opts.limit)}`);
    print(cmd, jobs, () => (jobs.length === 0 ? 'no jobs' : jobsTable(jobs)));
  });

program
  .command('job <id>')
  .description(
    "one job; --follow waits until it ends, showing progress; --log prints its agents' log lines",
  )
  .option('--follow', 'follow progress until the job ends')
  .option('--log', 'print the lines its agents logged (with --follow: as they come, until it ends)')
  .action(async (id: string, opts: { follow?: boolean; log?: boolean }, cmd: Command) => {
    const api = client(cmd);
    if (opts.log) {
      const { job, log } = await printJobLog(cmd, api, id, Boolean(opts.follow));
      if (opts.follow && job.status !== 'SUCCEEDED') throw new JobFailed(job.status);
      if (isJson(cmd)) print(cmd, log, () => '');
      return;
    }
    const job = opts.follow
      ? await waitForJob(cmd, api, id, true)
      : await api.get<Job>(`/jobs/${encodeURIComponent(id)}`);
    print(cmd, job, () => jobDetail(job));
    if (opts.follow && job.status !== 'SUCCEEDED') throw new JobFailed(job.status);
  });

/**
 * Prints a job's agent log (GET /jobs/{id}/log); following, every second until the job has
 * ended, the lines not printed yet (a task's lines in order; tasks merged as they arrive). With
 * --json nothing is printed here: the caller prints the last answer.
 */
async function printJobLog(
  cmd: Command,
  api: ApiClient,
  jobId: string,
  follow: boolean,
): Promise<{ job: Job; log: JobLog }> {
  const path = `/jobs/${encodeURIComponent(jobId)}`;
  const seen = new Map<string, number>();
  const human = !isJson(cmd);
  for (;;) {
    // The job first: a log read after it has ended holds every line its tasks wrote.
    const job = await api.get<Job>(path);
    const log = await api.get<JobLog>(`${path}/log`);
    const ended = TERMINAL.includes(job.status);
    if (human) {
      // Per task, how many of its lines were printed: print the rest, in the answer's order.
      const count = new Map<string, number>();
      const fresh: JobLogLine[] = [];
      for (const line of log.lines) {
        const n = (count.get(line.claimId) ?? 0) + 1;
        count.set(line.claimId, n);
        if (n > (seen.get(line.claimId) ?? 0)) fresh.push(line);
      }
      for (const [claim, n] of count) seen.set(claim, n);
      const notes = !follow || ended ? jobLogNotes(log) : [];
      const text = [...fresh.map(logLineText), ...notes].join('\n');
      if (text) process.stdout.write(`${text}\n`);
    }
    if (!follow || ended) return { job, log };
    await new Promise((r) => setTimeout(r, 1000));
  }
}

interface Cancellation {
  jobId: string;
  status: string;
  cancelled: boolean;
  pastPointOfNoReturn: boolean;
  tasksRunning: number;
  settled: boolean;
  message: string;
}

program
  .command('cancel <job>')
  .description(
    'cancel a job: it ends CANCELLED, its agents stop, release every hold and remove partial work (an in-place restore past its point of no return finishes)',
  )
  .option('--wait', 'wait until its tasks have stopped (past a point of no return: until it ends)')
  .option('--timeout <seconds>', 'with --wait, give up waiting after this long', '300')
  .action(async (id: string, opts: { wait?: boolean; timeout: string }, cmd: Command) => {
    const api = client(cmd);
    const path = `/jobs/${encodeURIComponent(id)}/cancellation`;
    let answer = await api.post<Cancellation>(path, {});
    const deadline = Date.now() + Number(opts.timeout) * 1000;
    while (opts.wait && !answer.settled && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 500));
      answer = await api.get<Cancellation>(path);
    }
    const waited =
      opts.wait && !answer.settled ? ` (still not settled after ${opts.timeout} s)` : '';
    print(cmd, answer, () => `${answer.message}${waited}`);
    // Past the point of no return nothing was cancelled; a wait that timed out did not see the end.
    if (!answer.cancelled || waited) throw new JobFailed(answer.status);
  });

/**
 * `--hold-sweep-seconds N`: how often the agent retries releasing holds whose release failed
 * (the engine was down), besides after every task; default $STOWAGE_HOLD_SWEEP_SECONDS, else 30.
 */
function holdSweepOption(): Option {
  return new Option(
    '--hold-sweep-seconds <n>',
    'how often held workloads whose release failed are tried again (default $STOWAGE_HOLD_SWEEP_SECONDS or 30)',
  ).argParser((text) => {
    const n = Number(text);
    if (!Number.isFinite(n) || n <= 0 || n > 86_400) {
      throw new InvalidArgumentError(
        `--hold-sweep-seconds takes a number of seconds above 0 and up to 86400, not ${text}`,
      );
    }
    return n;
  });
}

/** `--concurrency N`: how many tasks the agent runs at once (the backup Map runs two). */
function concurrencyOption(): Option {
  return new Option('--concurrency <n>', 'tasks the agent runs at once')
    .default(2)
    .argParser((text) => {
      const n = Number(text);
      if (!Number.isInteger(n) || n < 1 || n > 64) {
        throw new InvalidArgumentError(
          `--concurrency takes a whole number from 1 to 64, not ${text}`,
        );
      }
      return n;
    });
}

function required(name: string): string {
  const v = process.env[name];
  if (!v) throw new Error(`${name} must be set when STOWAGE_QUEUE_URL is (AWS mode)`);
  return v;
}

function untilSignal(): Promise<void> {
  return new Promise((resolve) => {
    const done = () => resolve();
    process.once('SIGINT', done);
    process.once('SIGTERM', done);
  });
}

try {
  await program.parseAsync(process.argv);
} catch (err) {
  const json = Boolean(program.opts<Globals>().json);
  if (err instanceof JobFailed) {
    process.exitCode = err.status === 'PARTIALLY_FAILED' ? 4 : 1;
  } else if (err instanceof ApiError || err instanceof Unreachable) {
    const code = err instanceof Unreachable ? 3 : 2;
    if (json)
      process.stdout.write(
        `${JSON.stringify({ error: err.name, message: err.message }, null, 2)}\n`,
      );
    process.stderr.write(`stowage: ${err.message}\n`);
    process.exitCode = code;
  } else {
    process.stderr.write(`stowage: ${(err as Error).message}\n`);
    process.exitCode = 2;
  }
}
