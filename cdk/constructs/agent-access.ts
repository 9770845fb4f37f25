/**
 * What an on-prem agent may do, as one managed policy and a role carrying it. The role trusts the
 * account root, so whatever the account allows to assume it (an IAM Roles Anywhere profile on the
 * agent host, an operator's session) gets exactly this: pull tasks from the site queues, answer
 * the state machine with the task token, move bytes to and from the bucket, unwrap (or, for an
 * empty repository, create) the repository's data key with the KMS data key, and write its own
 * rows of the catalog.
 *
 * Agents cannot delete objects (no s3:DeleteObject): a compromised agent host cannot wipe the
 * backups it made.
 */
import type { ITable } from 'aws-cdk-lib/aws-dynamodb';
import { AccountRootPrincipal, ManagedPolicy, PolicyStatement, Role } from 'aws-cdk-lib/aws-iam';
import type { IKey } from 'aws-cdk-lib/aws-kms';
import type { IBucket } from 'aws-cdk-lib/aws-s3';
import type { IQueue } from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { acknowledge, nagAttr } from '../nag';
import { DATA_KEY_USE_ACTIONS, DATA_KEY_USE_CONDITION } from './data-key';

export const AGENT_POLICY_NAME = 'StowageAgentPolicy';

/**
 * The catalog partitions an agent writes: its jobs' progress (JOB#<jobId>) and its inventory
 * (AGENT#<name>). Recovery points (POINT#) are committed only by the commit-point function, after
 * the state machine has the agent's result, so an agent can never fabricate one.
 */
export const AGENT_LEADING_KEYS = ['JOB#*', 'AGENT#*'] as const;

export interface AgentAccessProps {
  readonly siteQueues: readonly IQueue[];
  readonly bucket: IBucket;
  readonly table: ITable;
  /** The KMS key wrapping the repository data key (DataKey). */
  readonly dataKey: IKey;
}

export class AgentAccess extends Construct {
  readonly policy: ManagedPolicy;
  readonly role: Role;

  constructor(scope: Construct, id: string, props: AgentAccessProps) {
    super(scope, id);

    this.policy = new ManagedPolicy(this, 'Policy', {
      managedPolicyName: AGENT_POLICY_NAME,
      // Leave as is: changing a managed policy's description replaces it, and CloudFormation
      // cannot replace a resource with a fixed name.
      description:
        'Stowage on-prem agent: site queues, task answers, backup bucket, own catalog rows',
      statements: [
        new PolicyStatement({
          sid: 'PullSiteTasks',
          actions: [
            'sqs:ReceiveMessage',
            'sqs:DeleteMessage',
            'sqs:ChangeMessageVisibility',
            'sqs:GetQueueAttributes',
            'sqs:GetQueueUrl',
          ],
          resources: props.siteQueues.map((q) => q.queueArn),
        }),
        new PolicyStatement({
          sid: 'AnswerTasks',
          actions: ['states:SendTaskSuccess', 'states:SendTaskFailure', 'states:SendTaskHeartbeat'],
          // These actions support no resource-level ARNs (the task token is the authorisation),
          // so AWS requires Resource "*" here.
          resources: ['*'],
        }),
        new PolicyStatement({
          sid: 'StreamObjects',
          actions: [
            's3:GetObject',
            's3:PutObject',
            's3:AbortMultipartUpload',
            's3:ListMultipartUploadParts',
          ],
          resources: [props.bucket.arnForObjects('*')],
        }),
        new PolicyStatement({
          sid: 'ListStore',
          actions: ['s3:ListBucket'],
          resources: [props.bucket.bucketArn],
        }),
        new PolicyStatement({
          sid: 'UseRepositoryDataKey',
          // Only under the encryption context the agents pass, so the key unwraps the
          // repository data key and nothing else.
          actions: [...DATA_KEY_USE_ACTIONS],
          resources: [props.dataKey.keyArn],
          conditions: DATA_KEY_USE_CONDITION,
        }),
        new PolicyStatement({
          sid: 'WriteOwnCatalogRows',
          actions: ['dynamodb:GetItem', 'dynamodb:PutItem', 'dynamodb:UpdateItem'],
          resources: [props.table.tableArn],
          conditions: {
            'ForAllValues:StringLike': { 'dynamodb:LeadingKeys': [...AGENT_LEADING_KEYS] },
          },
        }),
      ],
    });

    this.role = new Role(this, 'Role', {
      description: 'Assumed by Stowage agents (e.g. through IAM Roles Anywhere)',
      assumedBy: new AccountRootPrincipal(),
      managedPolicies: [this.policy],
    });

    acknowledge(
      this.policy,
      'AwsSolutions-IAM5',
      'SendTaskSuccess/Failure/Heartbeat support no resource-level permissions; the task token ' +
        'is what authorises an answer.',
      'Resource::*',
    );
    acknowledge(
      this.policy,
      'AwsSolutions-IAM5',
      'Agents read and write the whole repository: its config, the wrapped data key, the ' +
        'content-addressed packs (data/) and their indexes (index/) shared by every point, and ' +
        'the manifests of points (points/<id>/) whose ids are minted per job. No delete.',
      `Resource::${nagAttr(props.bucket, 'Arn')}/*`,
    );
  }
}
