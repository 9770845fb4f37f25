/**
 * The monitoring construct in the stack (cdk/constructs/monitoring.ts): the dashboard's widgets,
 * every alarm going to the SNS topic, the agent-silent alarm per site, the failed-job alarm on
 * the EMF metric, and record-job's least-privilege events:PutEvents. Offline, no bundling.
 */
import './console-build';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { App, CfnElement } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import type { IConstruct } from 'constructs';
import { beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../../cdk/project';
import { SITES_CONTEXT_KEY, StowageStack } from '../../cdk/stack';
import { INVENTORY_INTERVAL_MS, JOB_EVENTS, METRICS } from '../../kernel/resources';

const SITES = ['local', 'lab'];
type Json = Record<string, unknown>;

let stack: StowageStack;
let template: Template;

function logicalId(construct: IConstruct): string {
  const element = construct instanceof CfnElement ? construct : construct.node.defaultChild;
  return stack.resolve((element as CfnElement).logicalId) as string;
}

beforeAll(() => {
  const cdkJson = JSON.parse(readFileSync(join(REPO_ROOT, 'cdk.json'), 'utf8')) as {
    context: Json;
  };
  const app = new App({
    context: {
      ...cdkJson.context,
      'aws:cdk:bundling-stacks': [],
      [SITES_CONTEXT_KEY]: SITES,
    },
  });
  stack = new StowageStack(app, 'Stowage');
  template = Template.fromStack(stack);
});

/** The dashboard's body as JSON (CloudFormation joins it from parts). */
function dashboardBody(): { widgets: Array<{ type: string; properties: Json }> } {
  const [dashboard] = Object.values(template.findResources('AWS::CloudWatch::Dashboard'));
  const body = (dashboard!.Properties as Json).DashboardBody as { 'Fn::Join': [string, unknown[]] };
  // Tokens (queue names, the region) become placeholders; the structure is what is asserted.
  const text = body['Fn::Join'][1]
    .map((part) => (typeof part === 'string' ? part : 'TOKEN'))
    .join('');
  return JSON.parse(text) as { widgets: Array<{ type: string; properties: Json }> };
}

describe('the monitoring construct', () => {
  it('has one dashboard with jobs by status, bytes, durations, heartbeats, queue age and DLQ depth', () => {
    template.resourceCountIs('AWS::CloudWatch::Dashboard', 1);
    const widgets = dashboardBody().widgets;
    const titles = widgets.map((w) => w.properties.title).filter(Boolean);
    expect(titles).toEqual([
      'Jobs by status',
      'Bytes protected, new and stored',
      'Job durations (ms)',
      'Restore durations and restore-test RTO (ms)',
      'Agent heartbeats per site',
      'Age of the oldest queued task (s)',
      'Dead-letter queue depth',
      'Alarms',
    ]);
    const metricsOf = (title: string) =>
      JSON.stringify(widgets.find((w) => w.properties.title === title)!.properties.metrics);
    for (const status of ['SUCCEEDED', 'FAILED', 'PARTIALLY_FAILED', 'CANCELLED']) {
      expect(metricsOf('Jobs by status')).toContain(`"Status","${status}"`);
    }
    for (const name of [METRICS.bytesProtected, METRICS.bytesNew, METRICS.bytesStored]) {
      expect(metricsOf('Bytes protected, new and stored')).toContain(`"${name}"`);
    }
    expect(metricsOf('Restore durations and restore-test RTO (ms)')).toContain('"Kind","RESTORE"');
    // Every site the stack has queues for: the configured ones and those the stack adds.
    const sites = stack.siteQueues.sites.map((s) => s.site);
    expect(sites).toEqual(expect.arrayContaining(SITES));
    for (const site of sites) {
      expect(metricsOf('Agent heartbeats per site')).toContain(`"Site","${site}"`);
    }
    expect(
      metricsOf('Age of the oldest queued task (s)').match(/ApproximateAgeOfOldestMessage/g),
    ).toHaveLength(sites.length);
    expect(
      metricsOf('Dead-letter queue depth').match(/ApproximateNumberOfMessagesVisible/g),
    ).toHaveLength(sites.length);
  });

  it('sends every alarm, the policies’ missed-run alarms included, to one encrypted SNS topic', () => {
    const topicId = logicalId(stack.monitoring.alarmTopic);
    template.hasResourceProperties('AWS::SNS::Topic', {
      KmsMasterKeyId: Match.anyValue(),
    });
    const alarms = template.findResources('AWS::CloudWatch::Alarm');
    const ids = Object.keys(alarms);
    expect(ids.length).toBeGreaterThanOrEqual(
      Object.keys(stack.workflows.machines).length + 2 * stack.siteQueues.sites.length + 1 + 2,
    );
    for (const [id, alarm] of Object.entries(alarms)) {
      expect((alarm.Properties as Json).AlarmActions, id).toEqual([{ Ref: topicId }]);
    }
    for (const policyAlarm of stack.policySchedules.alarms) {
      expect(ids).toContain(logicalId(policyAlarm));
    }
    // CloudWatch may use the topic's key.
    template.hasResourceProperties('AWS::KMS::Key', {
      EnableKeyRotation: true,
      KeyPolicy: {
        Statement: Match.arrayWith([
          Match.objectLike({
            Principal: { Service: 'cloudwatch.amazonaws.com' },
            Action: ['kms:Decrypt', 'kms:GenerateDataKey*'],
          }),
        ]),
      },
    });
  });

  it('alarms when a site’s agents are silent for three inventory intervals (missing data breaches)', () => {
    for (const { site } of stack.siteQueues.sites) {
      template.hasResourceProperties('AWS::CloudWatch::Alarm', {
        Namespace: METRICS.namespace,
        MetricName: METRICS.agentHeartbeats,
        Dimensions: [{ Name: 'Site', Value: site }],
        Statistic: 'SampleCount',
        ComparisonOperator: 'LessThanThreshold',
        Threshold: 1,
        TreatMissingData: 'breaching',
        Period: 30,
        EvaluationPeriods: (3 * INVENTORY_INTERVAL_MS) / 30_000,
        DatapointsToAlarm: (3 * INVENTORY_INTERVAL_MS) / 30_000,
      });
    }
  });

  it('alarms on jobs that end FAILED or PARTIALLY_FAILED, from the record-job metric', () => {
    template.hasResourceProperties('AWS::CloudWatch::Alarm', {
      Metrics: Match.arrayWith([
        Match.objectLike({ Expression: 'FILL(failed, 0) + FILL(partial, 0)' }),
        Match.objectLike({
          Id: 'failed',
          MetricStat: Match.objectLike({
            Metric: {
              Namespace: METRICS.namespace,
              MetricName: METRICS.jobsEnded,
              Dimensions: [{ Name: 'Status', Value: 'FAILED' }],
            },
          }),
        }),
      ]),
      Threshold: 1,
    });
  });

  it('lets record-job, the API, run-policy and start-checks put events on the default bus as source stowage, and nothing else', () => {
    const { recordJob, api, runPolicy, startChecks } = stack.functions;
    const roles = [recordJob, api, runPolicy, startChecks].map((f) => [
      { Ref: logicalId(f.fn.role!) },
    ]);
    const putters: Array<{ roles: unknown; statement: Json }> = [];
    for (const policy of Object.values(template.findResources('AWS::IAM::Policy'))) {
      const props = policy.Properties as Json;
      const statements = (props.PolicyDocument as { Statement: Json[] }).Statement;
      for (const statement of statements) {
        const actions = ([] as unknown[]).concat(statement.Action);
        if (actions.some((a) => String(a).startsWith('events:'))) {
          putters.push({ roles: props.Roles, statement });
        }
      }
    }
    expect(putters.map((p) => p.roles)).toEqual(expect.arrayContaining(roles));
    expect(putters).toHaveLength(4);
    for (const { statement } of putters) {
      expect(statement.Action).toBe('events:PutEvents');
      expect(statement.Condition).toEqual({
        StringEquals: { 'events:source': JOB_EVENTS.source },
      });
      expect(JSON.stringify(statement.Resource)).toContain(':event-bus/default');
    }
    template.hasResourceProperties('AWS::Lambda::Function', {
      Environment: { Variables: Match.objectLike({ EVENT_BUS_NAME: 'default' }) },
      Description: Match.stringLikeRegexp('records a job'),
    });
  });
});
