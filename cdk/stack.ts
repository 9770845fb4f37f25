/**
 * The Stowage control plane in one stack: catalog table, backup bucket, the KMS data key, site
 * queues, the functions, the backup/restore/verify/snapshot/prune state machines, one
 * EventBridge Scheduler group for the policies' schedules, the HTTP API, the
 * agents' access, and alarms.
 * Every table, bucket and queue setting comes from kernel/resources.ts, which local mode
 * reads too, so AWS and local mode cannot drift.
 *
 * Sites come from the `stowage:sites` context (cdk.json, or `-c stowage:sites=a,b`), one queue
 * and one role each; without it, the single DEFAULT_SITE. The MAINTENANCE_SITE is added to them:
 * prunes run on its agent, whose role alone may delete from the store.
 *
 * The web console (console/, built into dist/console/ by `npm run build:console`, which must
 * have run before synth) is deployed to S3 behind CloudFront with a config.json of this stack's
 * values; people sign in through a Cognito user pool and call the API with identity-pool
 * credentials (WebConsole, ConsoleSignIn).
 *
 * Other context: `stowage:objectLock` (governance|compliance) and `stowage:objectLockDays`,
 * `stowage:noncurrentDays` (BackupBucket), `stowage:agentCaCertificateFile` or
 * `stowage:agentCaArn` (IAM Roles Anywhere for the agents, AgentAccess), `stowage:pruneSchedule`
 * (the daily prune's EventBridge Scheduler expression in UTC, default `cron(0 4 * * ? *)`; `off`:
 * none).
 */
import { Aws, CfnOutput, Lazy, Stack, type StackProps } from 'aws-cdk-lib';
import { PolicyStatement } from 'aws-cdk-lib/aws-iam';
import type { StateMachine } from 'aws-cdk-lib/aws-stepfunctions';
import type { Construct } from 'constructs';
import { BACKUP_BUCKET, DEFAULT_SITE, FUNCTIONS, MAINTENANCE_SITE } from '../kernel/resources';
import { AgentAccess, agentCaFromContext } from './constructs/agent-access';
import { HttpApi } from './constructs/api';
import {
  BackupBucket,
  NONCURRENT_DAYS_CONTEXT_KEY,
  objectLockFromContext,
  positiveDays,
} from './constructs/backup-bucket';
import { CatalogTable } from './constructs/catalog-table';
import { ConsoleSignIn } from './constructs/console-sign-in';
import { DataKey } from './constructs/data-key';
import { Monitoring } from './constructs/monitoring';
import { NodeFunction } from './constructs/node-function';
import { PolicySchedules } from './constructs/schedules';
import { SiteQueues } from './constructs/site-queues';
import { type WorkflowName, Workflows } from './constructs/workflows';
import { cognitoIdentityOrigin, WebConsole } from './constructs/web-console';
import { acknowledge, nagAttr } from './nag';

export const SITES_CONTEXT_KEY = 'stowage:sites';

/**
 * Where recovery points live, and packs' indexes (kernel/object-layout.ts): commit-point checks a
 * point's manifest and pack list, and that every listed pack has its index.
 */
const POINT_MANIFEST_PREFIX = 'points/';
const INDEX_PREFIX = 'index/';

/** The api function's variable for the ARN of the `name` machine, e.g. VERIFY_STATE_MACHINE_ARN. */
export function stateMachineArnVariable(name: WorkflowName): string {
  return `${name.toUpperCase()}_STATE_MACHINE_ARN`;
}

/** The ARNs of every execution of `machine` (Step Functions names them by machine name). */
function executionsOf(machine: StateMachine): string {
  return `arn:${Aws.PARTITION}:states:${Aws.REGION}:${Aws.ACCOUNT_ID}:execution:${machine.stateMachineName}:*`;
}

export interface StowageStackProps extends StackProps {
  /** Overrides the `stowage:sites` context. */
  readonly sites?: readonly string[];
}

export class StowageStack extends Stack {
  // The parts, for tests and for whatever later stacks or aspects need to reach.
  readonly catalog: CatalogTable;
  readonly store: BackupBucket;
  readonly dataKey: DataKey;
  readonly siteQueues: SiteQueues;
  readonly functions: Readonly<Record<keyof typeof FUNCTIONS, NodeFunction>>;
  readonly policySchedules: PolicySchedules;
  readonly workflows: Workflows;
  readonly httpApi: HttpApi;
  readonly agentAccess: AgentAccess;
  readonly monitoring: Monitoring;
  readonly consoleSignIn: ConsoleSignIn;
  readonly webConsole: WebConsole;

  constructor(scope: Construct, id: string, props: StowageStackProps = {}) {
    super(scope, id, {
      description: 'Stowage: serverless backup and restore control plane',
      ...props,
    });
    const userSites = props.sites ?? sitesFromContext(this);
    const sites = userSites.includes(MAINTENANCE_SITE)
      ? userSites
      : [...userSites, MAINTENANCE_SITE];

    const catalog = new CatalogTable(this, 'Catalog');
    const objectLock = objectLockFromContext(this);
    const store = new BackupBucket(this, 'Store', {
      ...(objectLock ? { objectLock } : {}),
      noncurrentDays: positiveDays(
        this,
        NONCURRENT_DAYS_CONTEXT_KEY,
        BACKUP_BUCKET.noncurrentVersionDays,
      ),
    });
    const dataKey = new DataKey(this, 'DataKey');
    const queues = new SiteQueues(this, 'SiteQueues', { sites });
    const { table } = catalog;
    const { bucket } = store;

    const recordJob = new NodeFunction(this, 'RecordJob', {
      folder: FUNCTIONS.recordJob,
      description: 'Stowage: records a job starting, succeeding or failing in the catalog',
      environment: { TABLE_NAME: table.tableName },
    });
    catalog.grantReadWriteData(recordJob.fn);

    const commitPoint = new NodeFunction(this, 'CommitPoint', {
      folder: FUNCTIONS.commitPoint,
      description: "Stowage: commits a recovery point from the agent's manifest",
      environment: { TABLE_NAME: table.tableName, BUCKET_NAME: bucket.bucketName },
    });
    catalog.grantReadWriteData(commitPoint.fn);
    commitPoint.fn.addToRolePolicy(
      new PolicyStatement({
        actions: ['s3:GetObject'],
        resources: [bucket.arnForObjects(`${POINT_MANIFEST_PREFIX}*`)],
      }),
    );
    // Listing index/ (names only: it never reads an index) tells which packs are indexed.
    commitPoint.fn.addToRolePolicy(
      new PolicyStatement({
        actions: ['s3:ListBucket'],
        resources: [bucket.bucketArn],
        conditions: { StringEquals: { 's3:prefix': INDEX_PREFIX } },
      }),
    );
    acknowledge(
      commitPoint,
      'AwsSolutions-IAM5',
      'Checks (HeadObject needs s3:GetObject) the manifest and reads the pack list of the point ' +
        'it commits, which live under points/<recoveryPointId>/; the id is minted per job.',
      `Resource::${nagAttr(bucket, 'Arn')}/${POINT_MANIFEST_PREFIX}*`,
    );

    const prunePlan = new NodeFunction(this, 'PrunePlan', {
      folder: FUNCTIONS.prunePlan,
      description:
        'Stowage: applies retention, deletes the catalog items of the points a prune removes',
      environment: { TABLE_NAME: table.tableName },
    });
    catalog.grantReadWriteData(prunePlan.fn);

    const queueUrlPrefix = `https://sqs.${Aws.REGION}.${Aws.URL_SUFFIX}/${Aws.ACCOUNT_ID}/`;
    let startChecks: NodeFunction | undefined;
    const workflows = new Workflows(this, 'Workflows', {
      recordJob: recordJob.fn,
      prunePlan: prunePlan.fn,
      commitPoint: commitPoint.fn,
      siteQueues: queues.queues,
      // --verify-every / --restore-test-every: the backup workflow starts a policy's checks.
      startChecks: ({ verify, restore }) => {
        startChecks = new NodeFunction(this, 'StartChecks', {
          folder: FUNCTIONS.startChecks,
          description:
            "Stowage: starts the verifies and restore tests of a policy's every Nth run once its backup ended",
          environment: {
            TABLE_NAME: table.tableName,
            VERIFY_STATE_MACHINE_ARN: verify.stateMachineArn,
            RESTORE_STATE_MACHINE_ARN: restore.stateMachineArn,
            SITE_QUEUE_URL_PREFIX: queueUrlPrefix,
          },
        });
        catalog.grantReadWriteData(startChecks.fn);
        verify.grantStartExecution(startChecks.fn);
        restore.grantStartExecution(startChecks.fn);
        return startChecks.fn;
      },
    });
    const machines = Object.entries(workflows.machines) as [WorkflowName, StateMachine][];
    // The web console's origin (its CloudFront distribution), made below: the API's CORS, the
    // function's CONSOLE_ORIGIN and Cognito's callback URL name it before it exists.
    const later: { webConsole?: WebConsole } = {};
    const consoleOrigin = Lazy.string({
      produce: () => {
        if (!later.webConsole) throw new Error('the web console was not made');
        return later.webConsole.origin;
      },
    });

    // What each policy's EventBridge Scheduler schedule invokes: one run of the policy.
    const runPolicy = new NodeFunction(this, 'RunPolicy', {
      folder: FUNCTIONS.runPolicy,
      description: 'Stowage: runs a policy when its EventBridge Scheduler schedule fires',
      environment: {
        TABLE_NAME: table.tableName,
        BACKUP_STATE_MACHINE_ARN: workflows.machines.backup.stateMachineArn,
        PRUNE_STATE_MACHINE_ARN: workflows.machines.prune.stateMachineArn,
        SITE_QUEUE_URL_PREFIX: queueUrlPrefix,
        // The daily prune runs on the maintenance site's agent: its role alone may delete.
        PRUNE_AGENT: MAINTENANCE_SITE,
      },
    });
    catalog.grantReadWriteData(runPolicy.fn);
    workflows.machines.backup.grantStartExecution(runPolicy.fn);
    workflows.machines.prune.grantStartExecution(runPolicy.fn);
    const pruneSchedule = pruneScheduleFromContext(this);
    const schedules = new PolicySchedules(this, 'PolicySchedules', {
      target: runPolicy.fn,
      ...(pruneSchedule ? { pruneSchedule } : {}),
    });

    const api = new NodeFunction(this, 'Api', {
      folder: FUNCTIONS.api,
      description: 'Stowage: the HTTP API behind API Gateway',
      environment: {
        TABLE_NAME: table.tableName,
        BUCKET_NAME: bucket.bucketName,
        ...Object.fromEntries(
          machines.map(([name, machine]) => [
            stateMachineArnVariable(name),
            machine.stateMachineArn,
          ]),
        ),
        // A site's queue URL is this prefix + siteQueueName(site): queue names are fixed.
        SITE_QUEUE_URL_PREFIX: queueUrlPrefix,
        SCHEDULE_GROUP: schedules.groupName,
        SCHEDULE_TARGET_ARN: runPolicy.fn.functionArn,
        SCHEDULE_ROLE_ARN: schedules.invokeRole.roleArn,
        // Prunes run on the maintenance site's agent: its role alone may delete.
        PRUNE_AGENT: MAINTENANCE_SITE,
        // The one origin whose browser calls get CORS headers.
        CONSOLE_ORIGIN: consoleOrigin,
      },
    });
    schedules.grantManage(api.fn);
    acknowledge(
      api,
      'AwsSolutions-IAM5',
      "Schedules are named after policies, made at run time; this covers the stack's own " +
        'schedule group only.',
      `Resource::arn:<AWS::Partition>:scheduler:<AWS::Region>:<AWS::AccountId>:schedule/${schedules.groupName}/*`,
    );
    catalog.grantReadWriteData(api.fn);
    for (const [, machine] of machines) {
      machine.grantStartExecution(api.fn);
      api.fn.addToRolePolicy(
        new PolicyStatement({
          actions: ['states:DescribeExecution', 'states:StopExecution'],
          resources: [executionsOf(machine)],
        }),
      );
      acknowledge(
        api,
        'AwsSolutions-IAM5',
        'Execution ARNs end in the execution name, chosen per job at StartExecution time; this ' +
          'covers the executions of this one state machine only.',
        `Resource::arn:<AWS::Partition>:states:<AWS::Region>:<AWS::AccountId>:execution:${nagAttr(machine, 'Name')}:*`,
      );
    }

    const httpApi = new HttpApi(this, 'HttpApi', { handler: api.fn, corsOrigin: consoleOrigin });

    const signIn = new ConsoleSignIn(this, 'ConsoleSignIn', {
      consoleOrigin,
      operatorPolicy: httpApi.operatorPolicy,
      viewerPolicy: httpApi.viewerPolicy,
    });
    const webConsole = new WebConsole(this, 'Console', {
      connectOrigins: [
        `https://${httpApi.restApi.restApiId}.execute-api.${Aws.REGION}.${Aws.URL_SUFFIX}`,
        signIn.authDomainUrl,
        cognitoIdentityOrigin(),
      ],
      config: {
        mode: 'cloud',
        region: Aws.REGION,
        apiUrl: httpApi.url,
        userPoolId: signIn.userPool.userPoolId,
        userPoolClientId: signIn.client.userPoolClientId,
        identityPoolId: signIn.identityPool.ref,
        authDomain: signIn.authDomainUrl,
      },
      accessLogs: store.accessLogs,
    });
    later.webConsole = webConsole;

    const ca = agentCaFromContext(this);
    const agents = new AgentAccess(this, 'AgentAccess', {
      sites: queues.sites,
      maintenanceSite: MAINTENANCE_SITE,
      bucket,
      table,
      dataKey,
      ...(ca ? { ca } : {}),
    });

    const monitoring = new Monitoring(this, 'Monitoring', {
      stateMachines: workflows.machines,
      siteQueues: Object.fromEntries(queues.sites.map((s) => [s.site, s.queue])),
      deadLetterQueues: Object.fromEntries(queues.sites.map((s) => [s.site, s.deadLetterQueue])),
      // record-job announces the workflows' transitions; the API and run-policy those they make
      // (a job created PENDING, a workflow that could not start, a cancel).
      jobEventSources: [recordJob.fn, api.fn, runPolicy.fn, startChecks!.fn],
      alsoNotify: schedules.alarms,
    });

    new CfnOutput(this, 'AlarmTopicArn', {
      value: monitoring.alarmTopic.topicArn,
      description: 'SNS topic of every Stowage alarm: subscribe to it',
    });
    new CfnOutput(this, 'ApiUrl', { value: httpApi.url, description: 'STOWAGE_API for the CLI' });
    new CfnOutput(this, 'ConsoleUrl', {
      value: `${webConsole.origin}/`,
      description: 'The web console: sign in with a user of ConsoleUserPoolId',
    });
    new CfnOutput(this, 'ConsoleUserPoolId', {
      value: signIn.userPool.userPoolId,
      description: 'Cognito user pool of the console: add people to its operators or viewers group',
    });
    new CfnOutput(this, 'TableName', { value: table.tableName });
    new CfnOutput(this, 'BucketName', { value: bucket.bucketName });
    for (const { site, queue } of queues.sites) {
      new CfnOutput(this, `SiteQueueUrl-${site}`, {
        value: queue.queueUrl,
        description: `Task queue of site ${site}`,
      });
    }
    new CfnOutput(this, 'DataKeyId', {
      value: dataKey.key.keyArn,
      description: 'STOWAGE_KMS_KEY_ID for agents: the KMS key wrapping the repository data key',
    });
    for (const [site, role] of Object.entries(agents.roles)) {
      new CfnOutput(this, `AgentRoleArn-${site}`, {
        value: role.roleArn,
        description:
          site === MAINTENANCE_SITE
            ? 'Role of the maintenance agent (prunes; the only role that may delete)'
            : `Role of site ${site}'s agents`,
      });
    }
    if (agents.trustAnchor && agents.profile) {
      new CfnOutput(this, 'AgentTrustAnchorArn', { value: agents.trustAnchor.attrTrustAnchorArn });
      new CfnOutput(this, 'AgentProfileArn', { value: agents.profile.attrProfileArn });
    }
    new CfnOutput(this, 'OperatorPolicyArn', {
      value: httpApi.operatorPolicy.managedPolicyArn,
      description: 'Attach to whoever operates Stowage: every API method',
    });
    new CfnOutput(this, 'ViewerPolicyArn', {
      value: httpApi.viewerPolicy.managedPolicyArn,
      description: 'Attach to whoever may only look: the GET methods of the API',
    });

    this.catalog = catalog;
    this.store = store;
    this.dataKey = dataKey;
    this.siteQueues = queues;
    this.functions = {
      api,
      recordJob,
      commitPoint,
      prunePlan,
      runPolicy,
      startChecks: startChecks!,
    };
    this.policySchedules = schedules;
    this.workflows = workflows;
    this.httpApi = httpApi;
    this.agentAccess = agents;
    this.monitoring = monitoring;
    this.consoleSignIn = signIn;
    this.webConsole = webConsole;
  }
}

/**
 * `stowage:sites` as cdk.json gives it (a JSON array) or as `-c stowage:sites=a,b` gives it (a
 * string); absent means the single DEFAULT_SITE.
 */
export function sitesFromContext(scope: Construct): string[] {
  const value: unknown = scope.node.tryGetContext(SITES_CONTEXT_KEY);
  if (value === undefined || value === null) return [DEFAULT_SITE];
  if (typeof value === 'string') {
    return value
      .split(',')
      .map((s) => s.trim())
      .filter((s) => s.length > 0);
  }
  if (Array.isArray(value) && value.every((s) => typeof s === 'string')) return value;
  throw new Error(
    `${SITES_CONTEXT_KEY} must be a list of site names, got ${JSON.stringify(value)}`,
  );
}

/** The daily prune's default expression: 04:00 UTC. */
export const DEFAULT_PRUNE_SCHEDULE = 'cron(0 4 * * ? *)';

/** `stowage:pruneSchedule`: an EventBridge Scheduler expression, `off`, or absent (the default). */
function pruneScheduleFromContext(scope: Construct): string | undefined {
  const value: unknown = scope.node.tryGetContext('stowage:pruneSchedule');
  if (value === undefined) return DEFAULT_PRUNE_SCHEDULE;
  if (value === 'off') return undefined;
  if (typeof value !== 'string' || !/^(cron|rate)\(.+\)$/.test(value)) {
    throw new Error(
      `stowage:pruneSchedule must be an EventBridge Scheduler expression (cron(0 4 * * ? *), rate(1 day)) or off, not ${JSON.stringify(value)}`,
    );
  }
  return value;
}
