/**
 * Alarms for the two ways work gets lost quietly: an execution that fails (the job is FAILED and
 * somebody should look) and a task that landed in a site's DLQ (agents kept failing to start it;
 * its execution fails only later, on heartbeat timeout, and the DLQ holds the message that says
 * why). No notification target yet: the alarms are there to be wired to one.
 */
import { Duration } from 'aws-cdk-lib';
import { Alarm, ComparisonOperator, TreatMissingData } from 'aws-cdk-lib/aws-cloudwatch';
import type { IQueue } from 'aws-cdk-lib/aws-sqs';
import type { IStateMachine } from 'aws-cdk-lib/aws-stepfunctions';
import { Construct } from 'constructs';

export interface MonitoringProps {
  readonly stateMachines: Readonly<Record<string, IStateMachine>>;
  /** Dead-letter queues by site. */
  readonly deadLetterQueues: Readonly<Record<string, IQueue>>;
}

/** CloudWatch's standard period for SQS and Step Functions metrics. */
const PERIOD = Duration.minutes(5);

export class Monitoring extends Construct {
  readonly alarms: Alarm[] = [];

  constructor(scope: Construct, id: string, props: MonitoringProps) {
    super(scope, id);

    for (const [name, machine] of Object.entries(props.stateMachines)) {
      this.alarms.push(
        new Alarm(this, `${name}-executions-failed`, {
          alarmDescription: `A Stowage ${name} execution failed`,
          metric: machine.metricFailed({ period: PERIOD, statistic: 'Sum' }),
          threshold: 1,
          comparisonOperator: ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
          evaluationPeriods: 1,
          treatMissingData: TreatMissingData.NOT_BREACHING,
        }),
      );
    }

    for (const [site, dlq] of Object.entries(props.deadLetterQueues)) {
      this.alarms.push(
        new Alarm(this, `${site}-dlq-not-empty`, {
          alarmDescription: `Tasks for site ${site} are in its dead-letter queue`,
          metric: dlq.metricApproximateNumberOfMessagesVisible({
            period: PERIOD,
            statistic: 'Maximum',
          }),
          threshold: 0,
          comparisonOperator: ComparisonOperator.GREATER_THAN_THRESHOLD,
          evaluationPeriods: 1,
          treatMissingData: TreatMissingData.NOT_BREACHING,
        }),
      );
    }
  }
}
