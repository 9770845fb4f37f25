/**
 * What on-prem agents may do: one IAM role per site, so a stolen agent credential reaches one
 * site's work and nothing it could use to destroy or forge the repository.
 *
 * A site role may:
 * - receive, delete and hide messages of its own site's queue only (not the other sites', not the
 *   dead-letter queues);
 * - answer tasks (SendTaskSuccess/Failure/Heartbeat: no resource-level permissions exist, the
 *   task token it received is the authorisation);
 * - read every object of the store (a restore or a verify reads packs and indexes any site
 *   wrote, and points of other sites when it restores them `--to` itself) and list it;
 * - create objects under the keys agents write (config, the two copies of the wrapped data key,
 *   data/, index/, points/, leases/), never replace one: the bucket policy denies its
 *   object-creating puts that lack `If-None-Match: *`, and versioning would keep what an
 *   overwrite replaced anyway. No s3:DeleteObject, no gc/ marks;
 * - use the KMS data key, for the repository data key's encryption context only (the key policy
 *   names the roles, DataKey.allowUse);
 * - in the catalog (dynamodb:LeadingKeys): read job records (JOB#..., whether a job still runs);
 *   update its own site's task claims only (SITE#<site>#JOB#<job>: take a run token, report
 *   progress, mark a point of no return, record a task's end), which readers fold into the job;
 *   and read, put, delete and query its own agent items (AGENT#<site>: its header and one item
 *   per target). It writes no job record, no other site's claim and no other agent's items.
 *   Recovery points (POINT#) are written only by commit-point, after the state machine has the
 *   agent's result.
 *
 * The maintenance site's role (MAINTENANCE_SITE) is the only identity that may delete from the
 * store: the prune workflow runs there, and its role adds s3:DeleteObject on the prefixes a
 * prune sweeps (points/, index/, data/, leases/, gc/) and writing gc/ marks. A delete only adds a
 * delete marker (versions cannot be deleted, BackupBucket), so even that role's deletions can be
 * undone for the noncurrent window.
 *
 * Trust: with a CA (context `stowage:agentCaCertificateFile`, a PEM file, or
 * `stowage:agentCaArn`, an ACM Private CA), an IAM Roles Anywhere trust anchor and profile let a
 * host holding a certificate of that CA assume the role of the site its certificate's CN names
 * (`stowage-agent-<site>`): a certificate for one site cannot assume another's role. Without a
 * CA the roles trust the account, for whatever the account allows to assume them.
 */
import { readFileSync } from 'node:fs';
import { Stack } from 'aws-cdk-lib';
import type { ITable } from 'aws-cdk-lib/aws-dynamodb';
import {
  AccountRootPrincipal,
  Effect,
  ArnPrincipal,
  type IPrincipal,
  Policy,
  PolicyStatement,
  PrincipalWithConditions,
  Role,
  ServicePrincipal,
} from 'aws-cdk-lib/aws-iam';
import type { IBucket } from 'aws-cdk-lib/aws-s3';
import { CfnProfile, CfnTrustAnchor } from 'aws-cdk-lib/aws-rolesanywhere';
import type { IQueue } from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { acknowledge, nagAttr } from '../nag';
import { type DataKey, DATA_KEY_USE_ACTIONS, DATA_KEY_USE_CONDITION } from './data-key';

export const AGENT_CA_FILE_CONTEXT_KEY = 'stowage:agentCaCertificateFile';
export const AGENT_CA_ARN_CONTEXT_KEY = 'stowage:agentCaArn';

/**
 * The store's keys as kernel/object-layout.ts lays them out (cdk/ imports only
 * kernel/resources.ts; test/cdk checks these against the layout module).
 */
export const STORE_KEYS = {
  config: 'config',
  wrappedKey: 'keys/data-key.kms',
  wrappedKeyCopy: 'keys/data-key-copy.kms',
  packs: 'data/',
  indexes: 'index/',
  points: 'points/',
  leases: 'leases/',
  gcMarks: 'gc/',
} as const;

/** The keys a site's agent creates: never gc/ marks. */
export const AGENT_WRITABLE_KEYS = [
  STORE_KEYS.config,
  STORE_KEYS.wrappedKey,
  STORE_KEYS.wrappedKeyCopy,
  `${STORE_KEYS.packs}*`,
  `${STORE_KEYS.indexes}*`,
  `${STORE_KEYS.points}*`,
  `${STORE_KEYS.leases}*`,
] as const;

/** What a prune deletes (agents/repo/gc.ts), and only the maintenance role may. */
export const PRUNE_DELETABLE_KEYS = [
  `${STORE_KEYS.points}*`,
  `${STORE_KEYS.indexes}*`,
  `${STORE_KEYS.packs}*`,
  `${STORE_KEYS.leases}*`,
  `${STORE_KEYS.gcMarks}*`,
] as const;

/** The certificate subject CN that may assume a site's role through Roles Anywhere. */
export function agentCertificateCn(site: string): string {
  return `stowage-agent-${site}`;
}

/** Where agents' certificates come from, for IAM Roles Anywhere. */
export type AgentCa = { kind: 'pem'; pem: string } | { kind: 'acm-pca'; arn: string };

export interface AgentAccessProps {
  readonly sites: readonly { site: string; queue: IQueue }[];
  /** The site whose role may delete (prunes run there); one of `sites`. */
  readonly maintenanceSite: string;
  readonly bucket: IBucket;
  readonly table: ITable;
  readonly dataKey: DataKey;
  readonly ca?: AgentCa;
}

export class AgentAccess extends Construct {
  /** Each site's role, by site; the maintenance site's is `maintenanceRole`. */
  readonly roles: Readonly<Record<string, Role>>;
  /** Each site role's policy, by site. */
  readonly policies: Readonly<Record<string, Policy>>;
  readonly maintenanceRole: Role;
  readonly trustAnchor?: CfnTrustAnchor;
  readonly profile?: CfnProfile;

  constructor(scope: Construct, id: string, props: AgentAccessProps) {
    super(scope, id);
    const { bucket, table } = props;

    if (props.ca) {
      this.trustAnchor = new CfnTrustAnchor(this, 'TrustAnchor', {
        name: `${Stack.of(this).stackName}-agents`,
        enabled: true,
        source:
          props.ca.kind === 'pem'
            ? {
                sourceType: 'CERTIFICATE_BUNDLE',
                sourceData: { x509CertificateData: props.ca.pem },
              }
            : { sourceType: 'AWS_ACM_PCA', sourceData: { acmPcaArn: props.ca.arn } },
      });
    }

    const roles: Record<string, Role> = {};
    const policies: Record<string, Policy> = {};
    for (const { site, queue } of props.sites) {
      const maintenance = site === props.maintenanceSite;
      const role = new Role(this, `${site}-role`, {
        description: maintenance
          ? `Stowage maintenance agent (site ${site}): prunes; the only role that may delete from the store`
          : `Stowage agent of site ${site}`,
        assumedBy: this.trustFor(site),
      });
      if (this.trustAnchor) {
        // Roles Anywhere also tags the session and sets its source identity.
        role.assumeRolePolicy?.addStatements(
          new PolicyStatement({
            actions: ['sts:TagSession', 'sts:SetSourceIdentity'],
            principals: [new ServicePrincipal('rolesanywhere.amazonaws.com')],
            conditions: this.rolesAnywhereConditions(site),
          }),
        );
      }
      const statements = [
        new PolicyStatement({
          sid: 'PullOwnSiteTasks',
          actions: [
            'sqs:ReceiveMessage',
            'sqs:DeleteMessage',
            'sqs:ChangeMessageVisibility',
            'sqs:GetQueueAttributes',
            'sqs:GetQueueUrl',
          ],
          resources: [queue.queueArn],
        }),
        new PolicyStatement({
          sid: 'AnswerTasks',
          actions: ['states:SendTaskSuccess', 'states:SendTaskFailure', 'states:SendTaskHeartbeat'],
          // These actions support no resource-level ARNs (the task token is the authorisation),
          // so AWS requires Resource "*" here.
          resources: ['*'],
        }),
        new PolicyStatement({
          sid: 'ReadRepository',
          actions: ['s3:GetObject'],
          resources: [bucket.arnForObjects('*')],
        }),
        new PolicyStatement({
          sid: 'ListRepository',
          actions: ['s3:ListBucket'],
          resources: [bucket.bucketArn],
        }),
        new PolicyStatement({
          sid: 'CreateObjects',
          actions: ['s3:PutObject', 's3:AbortMultipartUpload', 's3:ListMultipartUploadParts'],
          resources: [
            ...AGENT_WRITABLE_KEYS,
            ...(maintenance ? [`${STORE_KEYS.gcMarks}*`] : []),
          ].map((key) => bucket.arnForObjects(key)),
        }),
        ...(maintenance
          ? [
              new PolicyStatement({
                sid: 'PruneDeletes',
                actions: ['s3:DeleteObject'],
                resources: PRUNE_DELETABLE_KEYS.map((key) => bucket.arnForObjects(key)),
              }),
            ]
          : []),
        new PolicyStatement({
          sid: 'UseRepositoryDataKey',
          actions: [...DATA_KEY_USE_ACTIONS],
          resources: [props.dataKey.key.keyArn],
          conditions: DATA_KEY_USE_CONDITION,
        }),
        new PolicyStatement({
          sid: 'ReadJobRecords',
          // Whether a task's job still runs (a cancel stops it). Job records are written by
          // the control plane only.
          actions: ['dynamodb:GetItem'],
          resources: [table.tableArn],
          conditions: { 'ForAllValues:StringLike': { 'dynamodb:LeadingKeys': ['JOB#*'] } },
        }),
        new PolicyStatement({
          sid: 'UpdateOwnTaskClaims',
          // Its claims' records (kernel/adapters/dynamodb-catalog.ts): take the run token, report
          // progress, mark the point of no return, record the end. Site names hold no `#`
          // (SiteQueues refuses them), so no other site's keys begin with this prefix.
          actions: ['dynamodb:UpdateItem'],
          resources: [table.tableArn],
          conditions: {
            'ForAllValues:StringLike': { 'dynamodb:LeadingKeys': [`SITE#${site}#*`] },
          },
        }),
        new PolicyStatement({
          sid: 'PublishOwnInventory',
          // One item per target: written, deleted when the target is gone, listed to compare.
          actions: [
            'dynamodb:GetItem',
            'dynamodb:PutItem',
            'dynamodb:DeleteItem',
            'dynamodb:Query',
          ],
          resources: [table.tableArn],
          conditions: {
            'ForAllValues:StringEquals': { 'dynamodb:LeadingKeys': [`AGENT#${site}`] },
          },
        }),
      ];
      const policy = new Policy(this, `${site}-policy`, { statements, roles: [role] });
      acknowledge(
        policy,
        'AwsSolutions-IAM5',
        'SendTaskSuccess/Failure/Heartbeat support no resource-level permissions; the task token ' +
          'is what authorises an answer.',
        'Resource::*',
      );
      const arn = `${nagAttr(bucket, 'Arn')}/`;
      const wildcardKeys = [
        '*',
        ...[...AGENT_WRITABLE_KEYS, ...PRUNE_DELETABLE_KEYS].filter((k) => k.endsWith('*')),
      ];
      for (const key of new Set(wildcardKeys)) {
        acknowledge(
          policy,
          'AwsSolutions-IAM5',
          key === '*'
            ? 'Restores and verifies read any pack, index and manifest of the shared, ' +
                'deduplicated repository (content-addressed packs are shared by every point).'
            : `Objects under ${key.slice(0, -1)} are named per pack, point or lease at run time ` +
                '(kernel/object-layout.ts); puts are create-only (bucket policy), and only the ' +
                'maintenance role deletes.',
          `Resource::${arn}${key}`,
        );
      }
      roles[site] = role;
      policies[site] = policy;
    }
    const maintenanceRole = roles[props.maintenanceSite];
    if (!maintenanceRole) {
      throw new Error(`the maintenance site ${props.maintenanceSite} has no queue`);
    }
    this.roles = roles;
    this.policies = policies;
    this.maintenanceRole = maintenanceRole;
    const all = Object.values(roles);

    if (this.trustAnchor) {
      this.profile = new CfnProfile(this, 'Profile', {
        name: `${Stack.of(this).stackName}-agents`,
        enabled: true,
        roleArns: all.map((r) => r.roleArn),
        // Session credentials last an hour; the signing helper renews them.
        durationSeconds: 3600,
      });
    }

    props.dataKey.allowUse(all);

    // Agents only create: an object-creating put (PutObject, CompleteMultipartUpload) without
    // If-None-Match: * is refused. UploadPart and CreateMultipartUpload cannot carry the header,
    // s3:ObjectCreationOperation exempts them.
    bucket.addToResourcePolicy(
      new PolicyStatement({
        sid: 'AgentsOnlyCreate',
        effect: Effect.DENY,
        principals: all.map((r) => new ArnPrincipal(r.roleArn)),
        actions: ['s3:PutObject'],
        resources: [bucket.arnForObjects('*')],
        conditions: {
          Null: { 's3:if-none-match': 'true' },
          Bool: { 's3:ObjectCreationOperation': 'true' },
        },
      }),
    );
    // Belt and braces: whatever IAM policy a site role may be given later, it never deletes.
    const sitesOnly = all.filter((r) => r !== maintenanceRole);
    if (sitesOnly.length > 0) {
      bucket.addToResourcePolicy(
        new PolicyStatement({
          sid: 'SiteAgentsNeverDelete',
          effect: Effect.DENY,
          principals: sitesOnly.map((r) => new ArnPrincipal(r.roleArn)),
          actions: ['s3:DeleteObject', 's3:DeleteObjectVersion'],
          resources: [bucket.arnForObjects('*')],
        }),
      );
    }
  }

  /** Who may assume `site`'s role: Roles Anywhere with that site's certificate, or the account. */
  private trustFor(site: string): IPrincipal {
    if (!this.trustAnchor) return new AccountRootPrincipal();
    return new PrincipalWithConditions(
      new ServicePrincipal('rolesanywhere.amazonaws.com'),
      this.rolesAnywhereConditions(site),
    );
  }

  /** This stack's trust anchor, and a certificate whose CN names `site`. */
  private rolesAnywhereConditions(site: string): Record<string, Record<string, string>> {
    return {
      ArnEquals: { 'aws:SourceArn': this.trustAnchor!.attrTrustAnchorArn },
      StringEquals: { 'aws:PrincipalTag/x509Subject/CN': agentCertificateCn(site) },
    };
  }
}

/** The agents' CA from the context, if any (a PEM file path, or an ACM Private CA ARN). */
export function agentCaFromContext(scope: Construct): AgentCa | undefined {
  const file: unknown = scope.node.tryGetContext(AGENT_CA_FILE_CONTEXT_KEY);
  const arn: unknown = scope.node.tryGetContext(AGENT_CA_ARN_CONTEXT_KEY);
  if (typeof file === 'string' && file !== '') {
    const pem = readFileSync(file, 'utf8');
    if (!pem.includes('-----BEGIN CERTIFICATE-----')) {
      throw new Error(`${AGENT_CA_FILE_CONTEXT_KEY}: ${file} holds no PEM certificate`);
    }
    return { kind: 'pem', pem };
  }
  if (typeof arn === 'string' && arn !== '') return { kind: 'acm-pca', arn };
  return undefined;
}
