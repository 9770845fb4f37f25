/**
 * The Schedules port on EventBridge Scheduler: one schedule per policy, named after it, in the
 * stack's schedule group, with the policy's expression, time zone and flexible window, invoking
 * the run-policy Lambda with `{"policy": NAME}` through a role that may do only that.
 */
import {
  ConflictException,
  CreateScheduleCommand,
  DeleteScheduleCommand,
  ResourceNotFoundException,
  SchedulerClient,
  UpdateScheduleCommand,
  type CreateScheduleCommandInput,
} from '@aws-sdk/client-scheduler';
import type { Policy } from '../../kernel/model';
import type { Schedules } from '../core/policies';

export interface ScheduleTarget {
  groupName: string;
  /** The run-policy Lambda. */
  targetArn: string;
  /** The role EventBridge Scheduler assumes to invoke it. */
  roleArn: string;
}

export class EventBridgeSchedules implements Schedules {
  constructor(
    private readonly target: ScheduleTarget,
    private readonly client: SchedulerClient = new SchedulerClient({}),
  ) {}

  private input(policy: Policy): CreateScheduleCommandInput {
    return {
      Name: policy.name,
      GroupName: this.target.groupName,
      ScheduleExpression: policy.schedule,
      ScheduleExpressionTimezone: policy.timezone,
      FlexibleTimeWindow:
        policy.flexibleWindowMinutes > 0
          ? { Mode: 'FLEXIBLE', MaximumWindowInMinutes: policy.flexibleWindowMinutes }
          : { Mode: 'OFF' },
      State: 'ENABLED',
      Description: `Stowage policy ${policy.name}: ${policy.targets.join(' ')}`.slice(0, 512),
      Target: {
        Arn: this.target.targetArn,
        RoleArn: this.target.roleArn,
        Input: JSON.stringify({ policy: policy.name }),
        // A run that could not be invoked is retried; each run starts its backups once.
        RetryPolicy: { MaximumRetryAttempts: 2, MaximumEventAgeInSeconds: 3600 },
      },
    };
  }

  /** Creates the policy's schedule, or updates it when it exists. */
  async put(policy: Policy): Promise<void> {
    try {
      await this.client.send(new UpdateScheduleCommand(this.input(policy)));
    } catch (err) {
      if (!(err instanceof ResourceNotFoundException)) throw err;
      try {
        await this.client.send(new CreateScheduleCommand(this.input(policy)));
      } catch (createErr) {
        // Created meanwhile by a concurrent put: update it to this policy.
        if (!(createErr instanceof ConflictException)) throw createErr;
        await this.client.send(new UpdateScheduleCommand(this.input(policy)));
      }
    }
  }

  async delete(name: string): Promise<void> {
    try {
      await this.client.send(
        new DeleteScheduleCommand({ Name: name, GroupName: this.target.groupName }),
      );
    } catch (err) {
      if (!(err instanceof ResourceNotFoundException)) throw err;
    }
  }
}

/** The port from the handler's environment: EventBridge in AWS, none where it is not set. */
export function schedulesFromEnv(env: NodeJS.ProcessEnv): Schedules | undefined {
  const { SCHEDULE_GROUP, SCHEDULE_TARGET_ARN, SCHEDULE_ROLE_ARN } = env;
  if (!SCHEDULE_GROUP || !SCHEDULE_TARGET_ARN || !SCHEDULE_ROLE_ARN) return undefined;
  return new EventBridgeSchedules({
    groupName: SCHEDULE_GROUP,
    targetArn: SCHEDULE_TARGET_ARN,
    roleArn: SCHEDULE_ROLE_ARN,
  });
}
