/**
 * What an operator watches in the AWS console, and what wakes them:
 *
 * - A CloudWatch dashboard: jobs by status, bytes protected / new / stored, job and restore
 *   durations (and restore tests' RTO), agent heartbeats per site, the age of the oldest task in
 *   each site's queue, each DLQ's depth, and the alarms.
 * - Alarms, all to one SNS topic (`alarmTopic`, KMS-encrypted with a key CloudWatch may use):
 *   a failed execution of each state machine, a job that ended FAILED or PARTIALLY_FAILED (a
 *   backup's items fail without failing the execution), a missed schedule (the policies' own
 *   alarms, `alsoNotify`), an agent silent for longer than three inventory intervals (its
 *   heartbeat metric missing counts as breaching), and a non-empty DLQ.
 * - Job State Change events: `jobEventSources` (record-job) may put events on the account's
 *   default bus with source `stowage` only, and are told the bus name (EVENT_BUS_NAME).
 *
 * The Stowage metrics are EMF lines (kernel/metrics.ts, names in kernel/resources.ts METRICS):
 * record-job writes them to its log in Lambda; an agent writes them to STOWAGE_METRICS_FILE, which
 * the host's CloudWatch agent ships to a log group (the README says how).
 */
import { Aws, Duration, Stack } from 'aws-cdk-lib';
import {
  Alarm,
  AlarmStatusWidget,
  ComparisonOperator,
  Dashboard,
  GraphWidget,
  MathExpression,
  Metric,
  TextWidget,
  TreatMissingData,
  type IMetric,
} from 'aws-cdk-lib/aws-cloudwatch';
import { SnsAction } from 'aws-cdk-lib/aws-cloudwatch-actions';
import { PolicyStatement, ServicePrincipal } from 'aws-cdk-lib/aws-iam';
import { Key } from 'aws-cdk-lib/aws-kms';
import type { Function as LambdaFunction } from 'aws-cdk-lib/aws-lambda';
import { Topic } from 'aws-cdk-lib/aws-sns';
import type { IQueue } from 'aws-cdk-lib/aws-sqs';
import type { IStateMachine } from 'aws-cdk-lib/aws-stepfunctions';
import { Construct } from 'constructs';
import { INVENTORY_INTERVAL_MS, JOB_EVENTS, METRICS } from '../../kernel/resources';

export interface MonitoringProps {
  readonly stateMachines: Readonly<Record<string, IStateMachine>>;
  /** Task queues by site. */
  readonly siteQueues?: Readonly<Record<string, IQueue>>;
  /** Dead-letter queues by site. */
  readonly deadLetterQueues: Readonly<Record<string, IQueue>>;
  /** Functions that put Job State Change events (record-job). */
  readonly jobEventSources?: readonly LambdaFunction[];
  /** Alarms made elsewhere (the policies' missed-run alarms) that also go to the topic. */
  readonly alsoNotify?: readonly Alarm[];
}

/** CloudWatch's standard period for SQS and Step Functions metrics. */
const PERIOD = Duration.minutes(5);

/** The bus job events go to: the account's default bus, where AWS services' events go too. */
export const JOB_EVENT_BUS = 'default';

/** Job statuses, as the dashboard shows them. */
const STATUSES = ['SUCCEEDED', 'FAILED', 'PARTIALLY_FAILED', 'CANCELLED'] as const;

/**
 * Silence that makes an agent "silent": three inventory intervals. Agents publish their
 * heartbeat at 1 s resolution, so periods under a minute are allowed; 30 s is the one that
 * divides the interval.
 */
const HEARTBEAT_PERIOD = Duration.seconds(30);
const SILENT_PERIODS = Math.ceil((3 * INVENTORY_INTERVAL_MS) / HEARTBEAT_PERIOD.toMilliseconds());

const stowageMetric = (
  metricName: string,
  dimensionsMap: Record<string, string> = {},
  statistic = 'Sum',
  period = PERIOD,
) => new Metric({ namespace: METRICS.namespace, metricName, dimensionsMap, statistic, period });

export class Monitoring extends Construct {
  readonly alarms: Alarm[] = [];
  readonly alarmTopic: Topic;
  readonly dashboard: Dashboard;

  constructor(scope: Construct, id: string, props: MonitoringProps) {
    super(scope, id);
    const stack = Stack.of(this);
    const sites = Object.keys(props.deadLetterQueues);

    // CloudWatch publishes to an encrypted topic only with a key it may use (not aws/sns).
    const topicKey = new Key(this, 'AlarmTopicKey', {
      description: 'Stowage: encrypts the alarm topic; CloudWatch alarms may use it',
      enableKeyRotation: true,
    });
    topicKey.grant(
      new ServicePrincipal('cloudwatch.amazonaws.com'),
      'kms:Decrypt',
      'kms:GenerateDataKey*',
    );
    this.alarmTopic = new Topic(this, 'AlarmTopic', {
      displayName: 'Stowage alarms',
      masterKey: topicKey,
      enforceSSL: true,
    });
    const notify = new SnsAction(this.alarmTopic);
    const alarm = (alarmId: string, props: ConstructorParameters<typeof Alarm>[2]): Alarm => {
      const made = new Alarm(this, alarmId, props);
      made.addAlarmAction(notify);
      this.alarms.push(made);
      return made;
    };

    for (const [name, machine] of Object.entries(props.stateMachines)) {
      alarm(`${name}-executions-failed`, {
        alarmDescription: `A Stowage ${name} execution failed`,
        metric: machine.metricFailed({ period: PERIOD, statistic: 'Sum' }),
        threshold: 1,
        comparisonOperator: ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        evaluationPeriods: 1,
        treatMissingData: TreatMissingData.NOT_BREACHING,
      });
    }

    const ended = (status: string) => stowageMetric(METRICS.jobsEnded, { Status: status });
    alarm('jobs-failed', {
      alarmDescription:
        'A Stowage job ended FAILED or PARTIALLY_FAILED (record-job metric JobsEnded)',
      metric: new MathExpression({
        expression: 'FILL(failed, 0) + FILL(partial, 0)',
        usingMetrics: { failed: ended('FAILED'), partial: ended('PARTIALLY_FAILED') },
        label: 'failed jobs',
        period: PERIOD,
      }),
      threshold: 1,
      comparisonOperator: ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      evaluationPeriods: 1,
      treatMissingData: TreatMissingData.NOT_BREACHING,
    });

    for (const site of sites) {
      alarm(`${site}-agent-silent`, {
        alarmDescription: `No agent of site ${site} reported for ${(3 * INVENTORY_INTERVAL_MS) / 1000} s (three inventory intervals)`,
        metric: stowageMetric(
          METRICS.agentHeartbeats,
          { Site: site },
          'SampleCount',
          HEARTBEAT_PERIOD,
        ),
        threshold: 1,
        comparisonOperator: ComparisonOperator.LESS_THAN_THRESHOLD,
        evaluationPeriods: SILENT_PERIODS,
        datapointsToAlarm: SILENT_PERIODS,
        // No heartbeat at all is the very thing to alarm on.
        treatMissingData: TreatMissingData.BREACHING,
      });
    }

    for (const [site, dlq] of Object.entries(props.deadLetterQueues)) {
      alarm(`${site}-dlq-not-empty`, {
        alarmDescription: `Tasks for site ${site} are in its dead-letter queue`,
        metric: dlq.metricApproximateNumberOfMessagesVisible({
          period: PERIOD,
          statistic: 'Maximum',
        }),
        threshold: 0,
        comparisonOperator: ComparisonOperator.GREATER_THAN_THRESHOLD,
        evaluationPeriods: 1,
        treatMissingData: TreatMissingData.NOT_BREACHING,
      });
    }

    for (const other of props.alsoNotify ?? []) other.addAlarmAction(notify);

    // Job State Change events: only on the default bus, only as `stowage`.
    for (const fn of props.jobEventSources ?? []) {
      fn.addToRolePolicy(
        new PolicyStatement({
          actions: ['events:PutEvents'],
          resources: [
            `arn:${Aws.PARTITION}:events:${Aws.REGION}:${Aws.ACCOUNT_ID}:event-bus/${JOB_EVENT_BUS}`,
          ],
          conditions: { StringEquals: { 'events:source': JOB_EVENTS.source } },
        }),
      );
      fn.addEnvironment('EVENT_BUS_NAME', JOB_EVENT_BUS);
    }

    this.dashboard = new Dashboard(this, 'Dashboard', {
      dashboardName: `${stack.stackName}-stowage`,
      defaultInterval: Duration.days(1),
    });
    const graph = (title: string, left: IMetric[], right: IMetric[] = [], width = 12) =>
      new GraphWidget({ title, left, right, width, height: 6 });
    const byKind = (metricName: string, statistic: string, kinds: string[]) =>
      kinds.map((kind) =>
        stowageMetric(metricName, { Kind: kind }, statistic).with({
          label: `${kind} ${statistic}`,
        }),
      );

    this.dashboard.addWidgets(
      new TextWidget({
        markdown:
          '# Stowage\nJobs, bytes and agents from the Stowage EMF metrics (namespace `Stowage`); queues from SQS. Job State Change events go to the default event bus (source `stowage`).',
        width: 24,
        height: 2,
      }),
    );
    this.dashboard.addWidgets(
      graph(
        'Jobs by status',
        STATUSES.map((s) => ended(s).with({ label: s })),
        [stowageMetric(METRICS.jobsStarted).with({ label: 'started' })],
      ),
      graph('Bytes protected, new and stored', [
        stowageMetric(METRICS.bytesProtected).with({ label: 'protected (read)' }),
        stowageMetric(METRICS.bytesNew).with({ label: 'new' }),
        stowageMetric(METRICS.bytesStored).with({ label: 'stored' }),
      ]),
    );
    this.dashboard.addWidgets(
      graph(
        'Job durations (ms)',
        byKind(METRICS.jobDuration, 'p50', ['BACKUP', 'VERIFY', 'PRUNE']),
        byKind(METRICS.jobDuration, 'Maximum', ['BACKUP']),
      ),
      graph(
        'Restore durations and restore-test RTO (ms)',
        byKind(METRICS.jobDuration, 'p50', ['RESTORE']),
        [stowageMetric(METRICS.restoreTestRto, {}, 'Maximum').with({ label: 'restore test RTO' })],
      ),
    );
    const siteQueues = Object.entries(props.siteQueues ?? {});
    this.dashboard.addWidgets(
      graph(
        'Agent heartbeats per site',
        sites.map((site) =>
          stowageMetric(
            METRICS.agentHeartbeats,
            { Site: site },
            'SampleCount',
            Duration.minutes(1),
          ).with({ label: site }),
        ),
        [],
        8,
      ),
      graph(
        'Age of the oldest queued task (s)',
        siteQueues.map(([site, queue]) =>
          queue
            .metricApproximateAgeOfOldestMessage({ period: PERIOD, statistic: 'Maximum' })
            .with({ label: site }),
        ),
        [],
        8,
      ),
      graph(
        'Dead-letter queue depth',
        Object.entries(props.deadLetterQueues).map(([site, dlq]) =>
          dlq
            .metricApproximateNumberOfMessagesVisible({ period: PERIOD, statistic: 'Maximum' })
            .with({ label: site }),
        ),
        [],
        8,
      ),
    );
    this.dashboard.addWidgets(
      new AlarmStatusWidget({
        title: 'Alarms',
        alarms: [...this.alarms, ...(props.alsoNotify ?? [])],
        width: 24,
      }),
    );
  }
}
