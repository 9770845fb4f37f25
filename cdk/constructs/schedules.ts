/**
 * Policies' schedules in AWS: one EventBridge Scheduler schedule per policy, created, updated and
 * deleted by the API with the policy (functions/adapters/eventbridge-schedules.ts), all in this
 * construct's schedule group. Each schedule invokes the run-policy Lambda through `invokeRole`,
 * which may invoke that one function and nothing else; the API may manage schedules of this group
 * only, and pass only that role, only to EventBridge Scheduler. The stack's daily prune is one
 * more schedule of the group (`stowage_prune`, `stowage:pruneSchedule`), invoking the same
 * function with `{"prune": true}`.
 */
import { Aws, Duration, Stack } from 'aws-cdk-lib';
import { Alarm, ComparisonOperator, Metric, TreatMissingData } from 'aws-cdk-lib/aws-cloudwatch';
import { PolicyStatement, Role, ServicePrincipal, type IGrantable } from 'aws-cdk-lib/aws-iam';
import type { IFunction } from 'aws-cdk-lib/aws-lambda';
import { CfnSchedule, CfnScheduleGroup } from 'aws-cdk-lib/aws-scheduler';
import { Construct } from 'constructs';
import { POLICY_EVENTS, POLICY_SCHEDULES } from '../../kernel/resources';

export interface PolicySchedulesProps {
  /** The run-policy function every schedule invokes. */
  readonly target: IFunction;
  /**
   * The daily prune's EventBridge Scheduler expression (UTC), e.g. `cron(0 4 * * ? *)`; absent:
   * no scheduled prune. It invokes the same function with `{"prune": true}`.
   */
  readonly pruneSchedule?: string;
}

/**
 * The daily prune's schedule name: `_` keeps it apart from any policy's schedule (policy names
 * are lower-case letters, digits and `-`).
 */
export const PRUNE_SCHEDULE_NAME = 'stowage_prune';

/** The missed-run check's schedule name (`_`: no policy's). */
export const MISSED_RUN_CHECK_NAME = 'stowage_missed_runs';

export class PolicySchedules extends Construct {
  readonly groupName: string;
  readonly group: CfnScheduleGroup;
  readonly invokeRole: Role;
  /** A run EventBridge Scheduler dropped (missed), and a run-policy invocation that failed. */
  readonly alarms: Alarm[];
  /** The daily prune's schedule, when there is one. */
  readonly prune?: CfnSchedule;
  /** The check that announces missed policy runs, every POLICY_EVENTS.everyMinutes. */
  readonly missedRunCheck: CfnSchedule;

  constructor(scope: Construct, id: string, props: PolicySchedulesProps) {
    super(scope, id);
    // One group per stack, so two stacks in an account never manage each other's schedules.
    this.groupName = `${Stack.of(this).stackName}-${POLICY_SCHEDULES.groupName}`;
    this.group = new CfnScheduleGroup(this, 'Group', { name: this.groupName });
    this.invokeRole = new Role(this, 'InvokeRole', {
      description: 'EventBridge Scheduler: invokes the Stowage run-policy function, nothing else',
      assumedBy: new ServicePrincipal('scheduler.amazonaws.com', {
        conditions: { StringEquals: { 'aws:SourceAccount': Aws.ACCOUNT_ID } },
      }),
    });
    this.invokeRole.addToPolicy(
      new PolicyStatement({
        actions: ['lambda:InvokeFunction'],
        resources: [props.target.functionArn],
      }),
    );
    if (props.pruneSchedule) {
      this.prune = new CfnSchedule(this, 'DailyPrune', {
        name: PRUNE_SCHEDULE_NAME,
        groupName: this.groupName,
        description:
          'Stowage: prune (retention, garbage collection, repack) on the maintenance agent',
        scheduleExpression: props.pruneSchedule,
        scheduleExpressionTimezone: 'UTC',
        flexibleTimeWindow: { mode: 'OFF' },
        target: {
          arn: props.target.functionArn,
          roleArn: this.invokeRole.roleArn,
          input: JSON.stringify({ prune: true }),
          retryPolicy: { maximumRetryAttempts: 2, maximumEventAgeInSeconds: 3600 },
        },
      });
      this.prune.addDependency(this.group);
    }
    // Every policy's missed runs, announced on the bus (core/policies.ts announceMissedRuns).
    this.missedRunCheck = new CfnSchedule(this, 'MissedRunCheck', {
      name: MISSED_RUN_CHECK_NAME,
      groupName: this.groupName,
      description: 'Stowage: a Policy Run Missed event for each policy run that did not start',
      scheduleExpression: `rate(${POLICY_EVENTS.everyMinutes} minutes)`,
      flexibleTimeWindow: { mode: 'OFF' },
      target: {
        arn: props.target.functionArn,
        roleArn: this.invokeRole.roleArn,
        input: JSON.stringify({ checkMissedRuns: true }),
        // A late check would announce runs of a window it does not cover: no retries of age.
        retryPolicy: { maximumRetryAttempts: 2, maximumEventAgeInSeconds: 300 },
      },
    });
    this.missedRunCheck.addDependency(this.group);
    const alarm = (id: string, description: string, metric: Metric) =>
      new Alarm(this, id, {
        alarmDescription: description,
        metric,
        threshold: 1,
        comparisonOperator: ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        evaluationPeriods: 1,
        treatMissingData: TreatMissingData.NOT_BREACHING,
      });
    this.alarms = [
      alarm(
        'runs-dropped',
        'A Stowage policy run was missed: EventBridge Scheduler dropped it after its retries',
        new Metric({
          namespace: 'AWS/Scheduler',
          metricName: 'InvocationDroppedCount',
          dimensionsMap: { ScheduleGroup: this.groupName },
          statistic: 'Sum',
          period: Duration.minutes(5),
        }),
      ),
      alarm(
        'run-errors',
        'A Stowage policy run failed to start its backups (run-policy errors)',
        props.target.metricErrors({ statistic: 'Sum', period: Duration.minutes(5) }),
      ),
    ];
  }

  /** The schedules of this group's ARN pattern. */
  get schedulesArn(): string {
    return `arn:${Aws.PARTITION}:scheduler:${Aws.REGION}:${Aws.ACCOUNT_ID}:schedule/${this.groupName}/*`;
  }

  /** Lets `grantee` create, update, read and delete this group's schedules, with the invoke role. */
  grantManage(grantee: IGrantable): void {
    grantee.grantPrincipal.addToPrincipalPolicy(
      new PolicyStatement({
        actions: [
          'scheduler:CreateSchedule',
          'scheduler:UpdateSchedule',
          'scheduler:DeleteSchedule',
          'scheduler:GetSchedule',
        ],
        resources: [this.schedulesArn],
      }),
    );
    grantee.grantPrincipal.addToPrincipalPolicy(
      new PolicyStatement({
        actions: ['iam:PassRole'],
        resources: [this.invokeRole.roleArn],
        conditions: { StringEquals: { 'iam:PassedToService': 'scheduler.amazonaws.com' } },
      }),
    );
  }
}
