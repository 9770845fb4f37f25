/**
 * Policies' schedules in AWS: one EventBridge Scheduler schedule per policy, created, updated and
 * deleted by the API with the policy (functions/adapters/eventbridge-schedules.ts), all in this
 * construct's schedule group. Each schedule invokes the run-policy Lambda through `invokeRole`,
 * which may invoke that one function and nothing else; the API may manage schedules of this group
 * only, and pass only that role, only to EventBridge Scheduler.
 */
import { Aws, Stack } from 'aws-cdk-lib';
import { PolicyStatement, Role, ServicePrincipal, type IGrantable } from 'aws-cdk-lib/aws-iam';
import type { IFunction } from 'aws-cdk-lib/aws-lambda';
import { CfnScheduleGroup } from 'aws-cdk-lib/aws-scheduler';
import { Construct } from 'constructs';
import { POLICY_SCHEDULES } from '../../kernel/resources';

export interface PolicySchedulesProps {
  /** The run-policy function every schedule invokes. */
  readonly target: IFunction;
}

export class PolicySchedules extends Construct {
  readonly groupName: string;
  readonly group: CfnScheduleGroup;
  readonly invokeRole: Role;

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
