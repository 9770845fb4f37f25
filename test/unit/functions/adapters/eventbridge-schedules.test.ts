import { ResourceNotFoundException, type SchedulerClient } from '@aws-sdk/client-scheduler';
import { describe, expect, it } from 'vitest';
import { EventBridgeSchedules } from '../../../../functions/adapters/eventbridge-schedules';
import type { Policy } from '../../../../kernel/model';

const policy: Policy = {
  name: 'nightly',
  targets: ['docker:web'],
  schedule: 'cron(0 3 * * ? *)',
  timezone: 'Europe/Paris',
  flexibleWindowMinutes: 15,
  retention: { keepLast: 7 },
  options: {},
  createdAt: '2026-12-06T12:00:00.000Z',
  updatedAt: '2026-12-06T12:00:00.000Z',
  runs: 0,
};

function fakeClient(exists: boolean) {
  const sent: Array<{ name: string; input: Record<string, unknown> }> = [];
  const client = {
    send: async (command: { constructor: { name: string }; input: Record<string, unknown> }) => {
      sent.push({ name: command.constructor.name, input: command.input });
      if (command.constructor.name === 'UpdateScheduleCommand' && !exists) {
        throw new ResourceNotFoundException({ message: 'no schedule', $metadata: {} } as never);
      }
      if (command.constructor.name === 'CreateScheduleCommand') exists = true;
      return {};
    },
  };
  return { client: client as unknown as SchedulerClient, sent };
}

const target = { groupName: 'Stowage-stowage-policies', targetArn: 'arn:fn', roleArn: 'arn:role' };

describe('EventBridge Scheduler schedules', () => {
  it('creates the policy schedule with its expression, time zone, window and target', async () => {
    const { client, sent } = fakeClient(false);
    await new EventBridgeSchedules(target, client).put(policy);
    expect(sent.map((s) => s.name)).toEqual(['UpdateScheduleCommand', 'CreateScheduleCommand']);
    expect(sent[1]!.input).toMatchObject({
      Name: 'nightly',
      GroupName: 'Stowage-stowage-policies',
      ScheduleExpression: 'cron(0 3 * * ? *)',
      ScheduleExpressionTimezone: 'Europe/Paris',
      FlexibleTimeWindow: { Mode: 'FLEXIBLE', MaximumWindowInMinutes: 15 },
      State: 'ENABLED',
      Target: { Arn: 'arn:fn', RoleArn: 'arn:role', Input: '{"policy":"nightly"}' },
    });
  });

  it('updates an existing schedule, turns the window off at 0, and deletes idempotently', async () => {
    const { client, sent } = fakeClient(true);
    const schedules = new EventBridgeSchedules(target, client);
    await schedules.put({ ...policy, flexibleWindowMinutes: 0 });
    expect(sent.map((s) => s.name)).toEqual(['UpdateScheduleCommand']);
    expect(sent[0]!.input.FlexibleTimeWindow).toEqual({ Mode: 'OFF' });
    const gone = {
      send: async () => {
        throw new ResourceNotFoundException({ message: 'no schedule', $metadata: {} } as never);
      },
    } as unknown as SchedulerClient;
    await expect(new EventBridgeSchedules(target, gone).delete('nightly')).resolves.toBeUndefined();
  });
});
