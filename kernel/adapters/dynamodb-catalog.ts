/**
 * The Catalog port on DynamoDB: the one module that knows the table's key schema.
 *
 *   item        pk                 sk       gsi1pk    gsi1sk             gsi2pk           gsi2sk
 *   job         JOB#<jobId>        JOB      JOBS      <createdAt>#<id>
 *   point       POINT#<pointId>    POINT    POINTS    <createdAt>#<id>   TARGET#<target>  <createdAt>#<id>
 *   agent       AGENT#<name>       AGENT    AGENTS    <name>   (its header: platforms, seenAt)
 *   inventory   AGENT#<name>       TARGET#<hash of target>#<part>   (one per target, or its parts)
 *   policy      POLICY#<name>      POLICY   POLICIES  <name>
 *   task claim  SITE#<site>#JOB#<jobId>  CLAIM#<claimId>  (a claimed task's run token, read once,
 *               then who took it, its progress, its point of no return, its end or its cancel)
 *   task log    SITE#<site>#JOB#<jobId>  LOG#<claimId>#<seq, 6 digits>  (a batch of a claimed
 *               task's log lines, written once by its agent)
 *
 * The job item lists its claims (`taskClaims`, a string set of `<site>/<claimId>`, written by the
 * hand-over) and is written by the control plane only; an agent writes only its own site's
 * partitions, `AGENT#<site>` and `SITE#<site>#...` (its role's dynamodb:LeadingKeys), and reads
 * job items. Readers fold the claims' reports into the job (kernel/catalog.ts withTaskReports),
 * and lists read through a GSI keep only items of the partition they list (an agent could give
 * an item of its own partition any GSI key, never another partition's key).
 */
import { DynamoDBClient, ConditionalCheckFailedException } from '@aws-sdk/client-dynamodb';
import {
  DynamoDBDocumentClient,
  DeleteCommand,
  GetCommand,
  PutCommand,
  QueryCommand,
  UpdateCommand,
  paginateQuery,
  type QueryCommandInput,
} from '@aws-sdk/lib-dynamodb';
import {
  SITE_NAME,
  withTaskReports,
  type Catalog,
  type ClaimRef,
  type JobItemUpdate,
  type JobUpdate,
  type TaskReport,
} from '../catalog';
import { createHash } from 'node:crypto';
import type {
  AgentRecord,
  InventoryTarget,
  Job,
  JobProgress,
  Policy,
  RecoveryPoint,
  TaskLogBatch,
  TaskRecord,
} from '../model';
import { ConflictError, NotFoundError, TransientError, ValidationError } from '../errors';
import { CATALOG_TABLE } from '../resources';
import type { JobStatus } from '../../statemachines/contracts';

const KEYS = ['pk', 'sk', 'gsi1pk', 'gsi1sk', 'gsi2pk', 'gsi2sk'] as const;

const jobKey = (id: string) => ({ pk: `JOB#${id}`, sk: 'JOB' });
const pointKey = (id: string) => ({ pk: `POINT#${id}`, sk: 'POINT' });
const agentKey = (name: string) => ({ pk: `AGENT#${name}`, sk: 'AGENT' });
const policyKey = (name: string) => ({ pk: `POLICY#${name}`, sk: 'POLICY' });
/** A claim's item, in its site's partition of the job; refuses a site no IAM condition could bind. */
const claimKey = ({ site, jobId, claimId }: ClaimRef) => {
  if (!SITE_NAME.test(site))
    throw new ValidationError(`site ${JSON.stringify(site)} is not a site name`);
  return { pk: `SITE#${site}#JOB#${jobId}`, sk: `CLAIM#${claimId}` };
};
/** A batch of a claim's log lines, beside the claim in its site's partition of the job. */
const taskLogKey = (claim: ClaimRef, seq: number) => ({
  pk: claimKey(claim).pk,
  sk: `LOG#${claim.claimId}#${String(seq).padStart(6, '0')}`,
});
/** How the job item lists a claim. */
const claimName = (claim: ClaimRef) => `${claim.site}/${claim.claimId}`;
const ACTIVE: readonly JobStatus[] = ['PENDING', 'RUNNING'];

/** The claims a job item lists, as refs. */
function claimsOf(item: Record<string, unknown>): ClaimRef[] {
  const jobId = String(item.jobId);
  const names = item.taskClaims instanceof Set ? [...(item.taskClaims as Set<string>)] : [];
  return names.map((name) => {
    const cut = name.indexOf('/');
    return { site: name.slice(0, cut), jobId, claimId: name.slice(cut + 1) };
  });
}

/** A job item as a Job: keys and the claim list dropped. */
function jobOf(item: Record<string, unknown> | undefined): Job | undefined {
  const job = strip<Job & { taskClaims?: unknown }>(item);
  if (job) delete job.taskClaims;
  return job;
}

/**
 * DynamoDB's limits on key values, in UTF-8 bytes: 2,048 for a partition key, 1,024 for a sort
 * key (the indexes' too). A request with a longer key fails with ValidationException, so an id
 * that long (a client can send any) is checked here: nothing can be stored under it, so a read
 * finds nothing and a write is refused with ValidationError (400), never a 500.
 */
const MAX_PARTITION_KEY_BYTES = 2048;
const MAX_SORT_KEY_BYTES = 1024;
const PARTITION_KEYS = new Set(['pk', 'gsi1pk', 'gsi2pk']);
const bytes = (text: string) => Buffer.byteLength(text, 'utf8');

/** Whether every key attribute of `item` is within DynamoDB's limits. */
function keysFit(item: Record<string, unknown>): boolean {
  return KEYS.every((k) => {
    const value = item[k];
    if (typeof value !== 'string') return true;
    return bytes(value) <= (PARTITION_KEYS.has(k) ? MAX_PARTITION_KEY_BYTES : MAX_SORT_KEY_BYTES);
  });
}

/**
 * Whether an item with this id could be stored: its key, and the index sort key
 * `<createdAt>#<id>` (or `<name>`) it is listed by.
 */
export function storableId(id: string): boolean {
  return keysFit({ pk: `POLICY#${id}`, gsi1sk: `${new Date(0).toISOString()}#${id}` });
}

/** Refuses an item whose keys DynamoDB would refuse. */
function mustFit(item: Record<string, unknown>, what: string): void {
  if (!keysFit(item)) {
    throw new ValidationError(`${what} is too long to be stored in the catalog`);
  }
}

function strip<T>(item: Record<string, unknown> | undefined): T | undefined {
  if (!item) return undefined;
  const copy = { ...item };
  for (const k of KEYS) delete copy[k];
  return copy as T;
}

/** Throttling and server faults are worth a retry; everything else is rethrown as is. */
function translate(err: unknown): never {
  const name = (err as { name?: string }).name ?? '';
  if (
    name === 'ProvisionedThroughputExceededException' ||
    name === 'ThrottlingException' ||
    name === 'RequestLimitExceeded' ||
    name === 'InternalServerError' ||
    name === 'ServiceUnavailable' ||
    (err as { code?: string }).code === 'ECONNREFUSED'
  ) {
    throw new TransientError(`catalog unavailable: ${(err as Error).message}`, { cause: err });
  }
  throw err;
}

export class DynamoDbCatalog implements Catalog {
  private readonly doc: DynamoDBDocumentClient;
  constructor(
    private readonly tableName: string,
    client: DynamoDBClient = new DynamoDBClient({}),
  ) {
    this.doc = DynamoDBDocumentClient.from(client, {
      marshallOptions: { removeUndefinedValues: true },
    });
  }

  async createJob(job: Job): Promise<void> {
    mustFit({ ...jobKey(job.jobId), gsi1sk: `${job.createdAt}#${job.jobId}` }, 'the job id');
    try {
      await this.doc.send(
        new PutCommand({
          TableName: this.tableName,
          Item: {
            ...jobKey(job.jobId),
            gsi1pk: 'JOBS',
            gsi1sk: `${job.createdAt}#${job.jobId}`,
            ...job,
          },
          ConditionExpression: 'attribute_not_exists(pk)',
        }),
      );
    } catch (err) {
      if (err instanceof ConditionalCheckFailedException) {
        throw new ConflictError(`job ${job.jobId} exists already`, { cause: err });
      }
      translate(err);
    }
  }

  async getJob(jobId: string): Promise<Job | undefined> {
    const item = await this.jobItem(jobId);
    return item && this.withTasks(item);
  }

  async getJobRecord(jobId: string): Promise<Job | undefined> {
    return jobOf(await this.jobItem(jobId));
  }

  async listJobs(options: { limit?: number } = {}): Promise<Job[]> {
    const items = await this.queryIndex('gsi1', 'gsi1pk', 'JOBS', options.limit ?? 100, 'JOB#');
    // What agents report reaches an ended job's record when it ends (updateJob): only the
    // jobs under way need their claims read.
    return Promise.all(
      items.map((item) =>
        ACTIVE.includes(item.status as JobStatus) ? this.withTasks(item) : jobOf(item)!,
      ),
    );
  }

  /** The job item as stored (its claim list included), read consistently. */
  private async jobItem(jobId: string): Promise<Record<string, unknown> | undefined> {
    if (!storableId(jobId)) return undefined;
    const out = await this.doc
      .send(new GetCommand({ TableName: this.tableName, Key: jobKey(jobId), ConsistentRead: true }))
      .catch(translate);
    return out.Item;
  }

  /** The items of the claims the job item lists (one query per site), with their site. */
  private async claimItems(
    item: Record<string, unknown>,
  ): Promise<{ site: string; claimId: string; item: Record<string, unknown> }[]> {
    const claims = claimsOf(item);
    if (claims.length === 0) return [];
    const listed = new Set(claims.map(claimName));
    const found: { site: string; claimId: string; item: Record<string, unknown> }[] = [];
    for (const site of new Set(claims.map((c) => c.site))) {
      const items = await this.queryAll({
        KeyConditionExpression: 'pk = :pk AND begins_with(sk, :claim)',
        ExpressionAttributeValues: {
          ':pk': claimKey({ site, jobId: String(item.jobId), claimId: '' }).pk,
          ':claim': 'CLAIM#',
        },
      });
      for (const claim of items) {
        const claimId = String(claim.sk).slice('CLAIM#'.length);
        // Only claims the job lists: an agent may create items in its own partition at will.
        if (listed.has(`${site}/${claimId}`)) found.push({ site, claimId, item: claim });
      }
    }
    return found;
  }

  /** What each claim the job item lists has reported. */
  private async reportsOf(item: Record<string, unknown>): Promise<TaskReport[]> {
    return (await this.claimItems(item)).map(({ site, claimId, item: claim }) => ({
      claimId,
      site,
      ...(typeof claim.itemIndex === 'number' ? { itemIndex: claim.itemIndex } : {}),
      ...(claim.progress ? { progress: claim.progress as JobProgress } : {}),
      ...(typeof claim.pointOfNoReturnAt === 'string'
        ? { pointOfNoReturnAt: claim.pointOfNoReturnAt }
        : {}),
      ...(typeof claim.endedAt === 'string' ? { endedAt: claim.endedAt } : {}),
    }));
  }

  /** The job with what its tasks reported folded in. */
  private async withTasks(item: Record<string, unknown>): Promise<Job> {
    return withTaskReports(jobOf(item)!, await this.reportsOf(item));
  }

  async updateJob(
    jobId: string,
    update: JobUpdate,
    whenStatus: readonly JobStatus[],
  ): Promise<Job | undefined> {
    if (!storableId(jobId)) return undefined;
    if (update.status && !ACTIVE.includes(update.status) && update.progress === undefined) {
      // The job ends: its record keeps the agents' last progress (a list reads no claims of an
      // ended job).
      const item = await this.jobItem(jobId);
      const progress = item && withTaskReports(jobOf(item)!, await this.reportsOf(item)).progress;
      if (progress) update = { ...update, progress };
    }
    const names: Record<string, string> = { '#status': 'status' };
    const values: Record<string, unknown> = {};
    const sets: string[] = [];
    for (const [field, value] of Object.entries(update)) {
      if (value === undefined) continue;
      names[`#${field}`] = field;
      values[`:${field}`] = value;
      sets.push(`#${field} = :${field}`);
    }
    const allowed = whenStatus.map((s, i) => {
      values[`:when${i}`] = s;
      return `:when${i}`;
    });
    if (sets.length === 0) return this.getJob(jobId);
    try {
      const out = await this.doc.send(
        new UpdateCommand({
          TableName: this.tableName,
          Key: jobKey(jobId),
          UpdateExpression: `SET ${sets.join(', ')}`,
          ConditionExpression: `attribute_exists(pk) AND #status IN (${allowed.join(', ')})`,
          ExpressionAttributeNames: names,
          ExpressionAttributeValues: values,
          ReturnValues: 'ALL_NEW',
        }),
      );
      return out.Attributes && this.withTasks(out.Attributes);
    } catch (err) {
      if (err instanceof ConditionalCheckFailedException) return undefined;
      translate(err);
    }
  }

  async updateJobItem(
    jobId: string,
    index: number,
    update: JobItemUpdate,
    whenStatus: readonly JobStatus[],
  ): Promise<boolean> {
    if (!Number.isInteger(index) || index < 0 || !storableId(jobId)) return false;
    const names: Record<string, string> = { '#status': 'status', '#items': 'items' };
    const values: Record<string, unknown> = {};
    const sets: string[] = [];
    for (const [field, value] of Object.entries(update)) {
      if (value === undefined) continue;
      names[`#f_${field}`] = field;
      values[`:f_${field}`] = value;
      // A document path: only this item's field changes, so concurrent items do not race.
      sets.push(`#items[${index}].#f_${field} = :f_${field}`);
    }
    if (sets.length === 0) return true;
    const allowed = whenStatus.map((s, i) => {
      values[`:when${i}`] = s;
      return `:when${i}`;
    });
    try {
      await this.doc.send(
        new UpdateCommand({
          TableName: this.tableName,
          Key: jobKey(jobId),
          UpdateExpression: `SET ${sets.join(', ')}`,
          ConditionExpression: `attribute_exists(#items[${index}]) AND #status IN (${allowed.join(', ')})`,
          ExpressionAttributeNames: names,
          ExpressionAttributeValues: values,
        }),
      );
      return true;
    } catch (err) {
      if (err instanceof ConditionalCheckFailedException) return false;
      translate(err);
    }
  }

  async cancelJob(
    jobId: string,
    end: { endedAt: string; error: NonNullable<Job['error']>; cancelRequestedAt: string },
  ): Promise<Job | undefined> {
    // Items that complete, or claims handed over, while this runs make the job's condition fail:
    // read again, a few times.
    for (let attempt = 0; attempt < 5; attempt++) {
      const item = await this.jobItem(jobId);
      if (!item) return undefined;
      const record = jobOf(item)!;
      if (!ACTIVE.includes(record.status) || record.pointOfNoReturnAt) return undefined;
      // Each claim first: cancelled unless its agent has marked it past its point of no return.
      const claims = claimsOf(item);
      for (const claim of claims) {
        const passed = await this.doc
          .send(
            new UpdateCommand({
              TableName: this.tableName,
              Key: claimKey(claim),
              UpdateExpression: 'SET #cancelled = if_not_exists(#cancelled, :at)',
              ConditionExpression: 'attribute_not_exists(#noReturn)',
              ExpressionAttributeNames: {
                '#cancelled': 'cancelledAt',
                '#noReturn': 'pointOfNoReturnAt',
              },
              ExpressionAttributeValues: { ':at': end.cancelRequestedAt },
            }),
          )
          .then(
            () => false,
            (err: unknown) => {
              if (err instanceof ConditionalCheckFailedException) return true;
              return translate(err);
            },
          );
        if (passed) return undefined;
      }
      const job = withTaskReports(record, await this.reportsOf(item));
      const open = (job.items ?? []).flatMap((it, i) => (it.status === 'COMPLETED' ? [] : [i]));
      const names: Record<string, string> = {
        '#status': 'status',
        '#endedAt': 'endedAt',
        '#error': 'error',
        '#asked': 'cancelRequestedAt',
        '#noReturn': 'pointOfNoReturnAt',
        '#claims': 'taskClaims',
        ...(job.progress ? { '#progress': 'progress' } : {}),
        ...(open.length ? { '#items': 'items', '#istatus': 'status' } : {}),
      };
      const values: Record<string, unknown> = {
        ':cancelled': 'CANCELLED',
        ':endedAt': end.endedAt,
        ':error': end.error,
        ':asked': end.cancelRequestedAt,
        ':pending': 'PENDING',
        ':running': 'RUNNING',
        ...(claims.length ? { ':claims': claims.length } : {}),
        ...(job.progress ? { ':progress': job.progress } : {}),
        ...(open.length ? { ':completed': 'COMPLETED' } : {}),
      };
      const sets = [
        '#status = :cancelled',
        '#endedAt = :endedAt',
        '#error = :error',
        '#asked = :asked',
        // Where the agents had got to stays on the record of the ended job.
        ...(job.progress ? ['#progress = :progress'] : []),
        ...open.map((i) => `#items[${i}].#istatus = :cancelled`),
      ];
      const conditions = [
        'attribute_exists(pk)',
        '#status IN (:pending, :running)',
        'attribute_not_exists(#noReturn)',
        // The claims cancelled above are all the job has: one handed over since gets its turn.
        claims.length ? 'size(#claims) = :claims' : 'attribute_not_exists(#claims)',
        ...open.map((i) => `#items[${i}].#istatus <> :completed`),
      ];
      try {
        const out = await this.doc.send(
          new UpdateCommand({
            TableName: this.tableName,
            Key: jobKey(jobId),
            UpdateExpression: `SET ${sets.join(', ')}`,
            ConditionExpression: conditions.join(' AND '),
            ExpressionAttributeNames: names,
            ExpressionAttributeValues: values,
            ReturnValues: 'ALL_NEW',
          }),
        );
        return out.Attributes && this.withTasks(out.Attributes);
      } catch (err) {
        if (!(err instanceof ConditionalCheckFailedException)) translate(err);
      }
    }
    throw new TransientError(`job ${jobId} kept changing while it was cancelled; try again`);
  }

  async putPoint(point: RecoveryPoint): Promise<void> {
    mustFit(
      {
        ...pointKey(point.recoveryPointId),
        gsi1sk: `${point.createdAt}#${point.recoveryPointId}`,
        gsi2pk: `TARGET#${point.target}`,
      },
      "the point's id or target",
    );
    try {
      await this.doc.send(
        new PutCommand({
          TableName: this.tableName,
          Item: {
            ...pointKey(point.recoveryPointId),
            gsi1pk: 'POINTS',
            gsi1sk: `${point.createdAt}#${point.recoveryPointId}`,
            gsi2pk: `TARGET#${point.target}`,
            gsi2sk: `${point.createdAt}#${point.recoveryPointId}`,
            ...point,
          },
          // A retried commit of the same job rewrites its own point; another job's never.
          ConditionExpression: 'attribute_not_exists(pk) OR jobId = :jobId',
          ExpressionAttributeValues: { ':jobId': point.jobId },
        }),
      );
    } catch (err) {
      if (err instanceof ConditionalCheckFailedException) {
        throw new ConflictError(`recovery point ${point.recoveryPointId} belongs to another job`, {
          cause: err,
        });
      }
      translate(err);
    }
  }

  async getPoint(recoveryPointId: string): Promise<RecoveryPoint | undefined> {
    if (!storableId(recoveryPointId)) return undefined;
    const out = await this.doc
      .send(
        new GetCommand({
          TableName: this.tableName,
          Key: pointKey(recoveryPointId),
          ConsistentRead: true,
        }),
      )
      .catch(translate);
    return strip<RecoveryPoint>(out.Item);
  }

  async listPoints(options: { target?: string; limit?: number } = {}): Promise<RecoveryPoint[]> {
    const limit = options.limit ?? 100;
    if (options.target && !keysFit({ gsi2pk: `TARGET#${options.target}` })) return [];
    const items = options.target
      ? await this.queryIndex('gsi2', 'gsi2pk', `TARGET#${options.target}`, limit, 'POINT#')
      : await this.queryIndex('gsi1', 'gsi1pk', 'POINTS', limit, 'POINT#');
    return items.map((item) => strip<RecoveryPoint>(item)!);
  }

  async deletePoint(recoveryPointId: string): Promise<void> {
    if (!storableId(recoveryPointId)) return;
    await this.doc
      .send(new DeleteCommand({ TableName: this.tableName, Key: pointKey(recoveryPointId) }))
      .catch(translate);
  }

  async updatePoint(
    recoveryPointId: string,
    update: Partial<Pick<RecoveryPoint, 'verifiedAt' | 'restoreTest'>>,
  ): Promise<boolean> {
    return this.updateExisting(pointKey(recoveryPointId), update);
  }

  /** SETs the defined fields (REMOVEs those given as null) of an item that exists. */
  private async updateExisting(
    key: Record<string, string>,
    update: Record<string, unknown>,
  ): Promise<boolean> {
    if (!keysFit(key)) return false;
    const names: Record<string, string> = {};
    const values: Record<string, unknown> = {};
    const sets: string[] = [];
    const removes: string[] = [];
    for (const [field, value] of Object.entries(update)) {
      if (value === undefined) continue;
      names[`#${field}`] = field;
      if (value === null) {
        removes.push(`#${field}`);
        continue;
      }
      values[`:${field}`] = value;
      sets.push(`#${field} = :${field}`);
    }
    if (sets.length === 0 && removes.length === 0) return true;
    try {
      await this.doc.send(
        new UpdateCommand({
          TableName: this.tableName,
          Key: key,
          UpdateExpression: [
            sets.length ? `SET ${sets.join(', ')}` : '',
            removes.length ? `REMOVE ${removes.join(', ')}` : '',
          ]
            .join(' ')
            .trim(),
          ConditionExpression: 'attribute_exists(pk)',
          ExpressionAttributeNames: names,
          ...(sets.length ? { ExpressionAttributeValues: values } : {}),
        }),
      );
      return true;
    } catch (err) {
      if (err instanceof ConditionalCheckFailedException) return false;
      translate(err);
    }
  }

  async createPolicy(policy: Policy): Promise<void> {
    mustFit({ ...policyKey(policy.name), gsi1sk: policy.name }, 'the policy name');
    try {
      await this.doc.send(
        new PutCommand({
          TableName: this.tableName,
          Item: { ...policyKey(policy.name), gsi1pk: 'POLICIES', gsi1sk: policy.name, ...policy },
          ConditionExpression: 'attribute_not_exists(pk)',
        }),
      );
    } catch (err) {
      if (err instanceof ConditionalCheckFailedException) {
        throw new ConflictError(
          `a policy named ${policy.name} exists already; \`stowage policy update ${policy.name}\` changes it`,
          { cause: err },
        );
      }
      translate(err);
    }
  }

  async replacePolicy(policy: Policy): Promise<void> {
    mustFit({ ...policyKey(policy.name), gsi1sk: policy.name }, 'the policy name');
    try {
      await this.doc.send(
        new PutCommand({
          TableName: this.tableName,
          Item: { ...policyKey(policy.name), gsi1pk: 'POLICIES', gsi1sk: policy.name, ...policy },
          ConditionExpression: 'attribute_exists(pk)',
        }),
      );
    } catch (err) {
      if (err instanceof ConditionalCheckFailedException) {
        throw new NotFoundError(`policy ${policy.name} does not exist`, { cause: err });
      }
      translate(err);
    }
  }

  async updatePolicy(
    name: string,
    update: Partial<Pick<Policy, 'runs' | 'lastRunAt' | 'lastJobId' | 'nextRunAt'>> & {
      flag?: string | null;
    },
  ): Promise<boolean> {
    return this.updateExisting(policyKey(name), update);
  }

  async getPolicy(name: string): Promise<Policy | undefined> {
    if (!storableId(name)) return undefined;
    const out = await this.doc
      .send(
        new GetCommand({ TableName: this.tableName, Key: policyKey(name), ConsistentRead: true }),
      )
      .catch(translate);
    return strip<Policy>(out.Item);
  }

  async listPolicies(): Promise<Policy[]> {
    const items = await this.queryIndex('gsi1', 'gsi1pk', 'POLICIES', 1000, 'POLICY#', true);
    return items.map((item) => strip<Policy>(item)!);
  }

  async deletePolicy(name: string): Promise<void> {
    if (!storableId(name)) return;
    await this.doc
      .send(new DeleteCommand({ TableName: this.tableName, Key: policyKey(name) }))
      .catch(translate);
  }

  async putRunToken(claim: ClaimRef, taskToken: string): Promise<void> {
    mustFit(claimKey(claim), 'the job or claim id');
    if (!storableId(claim.jobId)) throw new ValidationError('the job id is too long');
    // The job lists the claim first (a cancel then sees it), only while it is active.
    try {
      await this.doc.send(
        new UpdateCommand({
          TableName: this.tableName,
          Key: jobKey(claim.jobId),
          UpdateExpression: 'ADD #claims :claim',
          ConditionExpression: 'attribute_exists(pk) AND #status IN (:pending, :running)',
          ExpressionAttributeNames: { '#claims': 'taskClaims', '#status': 'status' },
          ExpressionAttributeValues: {
            ':claim': new Set([claimName(claim)]),
            ':pending': 'PENDING',
            ':running': 'RUNNING',
          },
        }),
      );
    } catch (err) {
      if (err instanceof ConditionalCheckFailedException) {
        throw new ConflictError(
          `job ${claim.jobId} has ended or does not exist: its task is not run`,
          {
            cause: err,
          },
        );
      }
      translate(err);
    }
    try {
      await this.doc.send(
        new UpdateCommand({
          TableName: this.tableName,
          Key: claimKey(claim),
          UpdateExpression: 'SET taskToken = :token, handedOverAt = :now',
          ConditionExpression: 'attribute_not_exists(cancelledAt)',
          ExpressionAttributeValues: { ':token': taskToken, ':now': new Date().toISOString() },
        }),
      );
    } catch (err) {
      if (err instanceof ConditionalCheckFailedException) {
        throw new ConflictError(`job ${claim.jobId} was cancelled: its task is not run`, {
          cause: err,
        });
      }
      translate(err);
    }
  }

  async takeRunToken(claim: ClaimRef): Promise<string | undefined> {
    if (!keysFit(claimKey(claim))) return undefined;
    // An UpdateItem that removes the token (agents may update their claims, not delete them).
    try {
      const out = await this.doc.send(
        new UpdateCommand({
          TableName: this.tableName,
          Key: claimKey(claim),
          UpdateExpression: 'REMOVE taskToken SET takenAt = :now, #agent = :agent',
          ConditionExpression: 'attribute_exists(taskToken)',
          ExpressionAttributeNames: { '#agent': 'agent' },
          ExpressionAttributeValues: { ':now': new Date().toISOString(), ':agent': claim.site },
          ReturnValues: 'ALL_OLD',
        }),
      );
      const token = out.Attributes?.taskToken;
      return typeof token === 'string' ? token : undefined;
    } catch (err) {
      if (err instanceof ConditionalCheckFailedException) return undefined;
      translate(err);
    }
  }

  async reportProgress(claim: ClaimRef, progress: JobProgress, itemIndex?: number): Promise<void> {
    if (!keysFit(claimKey(claim))) return;
    const index = Number.isInteger(itemIndex) && itemIndex! >= 0 ? itemIndex : undefined;
    try {
      await this.doc.send(
        new UpdateCommand({
          TableName: this.tableName,
          Key: claimKey(claim),
          UpdateExpression: `SET #progress = :progress${index === undefined ? '' : ', #item = :item'}`,
          ConditionExpression: 'attribute_exists(pk)',
          ExpressionAttributeNames: {
            '#progress': 'progress',
            ...(index === undefined ? {} : { '#item': 'itemIndex' }),
          },
          ExpressionAttributeValues: {
            ':progress': progress,
            ...(index === undefined ? {} : { ':item': index }),
          },
        }),
      );
    } catch (err) {
      if (err instanceof ConditionalCheckFailedException) return;
      translate(err);
    }
  }

  async markPointOfNoReturn(claim: ClaimRef, at: string): Promise<boolean> {
    if (!keysFit(claimKey(claim))) return false;
    try {
      await this.doc.send(
        new UpdateCommand({
          TableName: this.tableName,
          Key: claimKey(claim),
          UpdateExpression: 'SET #noReturn = if_not_exists(#noReturn, :at)',
          ConditionExpression: 'attribute_exists(takenAt) AND attribute_not_exists(cancelledAt)',
          ExpressionAttributeNames: { '#noReturn': 'pointOfNoReturnAt' },
          ExpressionAttributeValues: { ':at': at },
        }),
      );
      return true;
    } catch (err) {
      if (err instanceof ConditionalCheckFailedException) return false;
      translate(err);
    }
  }

  async endTask(
    claim: ClaimRef,
    end: { endedAt: string; outcome: NonNullable<TaskRecord['outcome']> },
  ): Promise<void> {
    if (!keysFit(claimKey(claim))) return;
    try {
      await this.doc.send(
        new UpdateCommand({
          TableName: this.tableName,
          Key: claimKey(claim),
          UpdateExpression:
            'SET #ended = if_not_exists(#ended, :at), #outcome = if_not_exists(#outcome, :o)',
          ConditionExpression: 'attribute_exists(pk)',
          ExpressionAttributeNames: { '#ended': 'endedAt', '#outcome': 'outcome' },
          ExpressionAttributeValues: { ':at': end.endedAt, ':o': end.outcome },
        }),
      );
    } catch (err) {
      if (err instanceof ConditionalCheckFailedException) return;
      translate(err);
    }
  }

  async listTasks(jobId: string): Promise<TaskRecord[]> {
    const job = await this.jobItem(jobId);
    if (!job) return [];
    const tasks: TaskRecord[] = (await this.claimItems(job)).map(({ claimId, item }) => {
      const { handedOverAt, agent, takenAt, endedAt, outcome } = item as Record<
        string,
        string | undefined
      >;
      return {
        claimId,
        handedOverAt: handedOverAt ?? '',
        ...(agent ? { agent } : {}),
        ...(takenAt ? { takenAt } : {}),
        ...(endedAt ? { endedAt } : {}),
        ...(outcome ? { outcome: outcome as NonNullable<TaskRecord['outcome']> } : {}),
      };
    });
    return tasks.sort((a, b) => a.handedOverAt.localeCompare(b.handedOverAt));
  }

  async appendTaskLog(claim: ClaimRef, batch: TaskLogBatch): Promise<void> {
    const key = taskLogKey(claim, batch.seq);
    mustFit(key, 'the job or claim id');
    // An UpdateItem that creates the item (the agent role may update items of its own site's
    // partitions, not put them), only if it is not there: a retried write of a batch that
    // landed changes nothing.
    try {
      await this.doc.send(
        new UpdateCommand({
          TableName: this.tableName,
          Key: key,
          UpdateExpression:
            'SET #agent = :agent, #target = :target, #lines = :lines, #dropped = :dropped',
          ConditionExpression: 'attribute_not_exists(pk)',
          ExpressionAttributeNames: {
            '#agent': 'agent',
            '#target': 'target',
            '#lines': 'lines',
            '#dropped': 'dropped',
          },
          ExpressionAttributeValues: {
            ':agent': batch.agent,
            ':target': batch.target,
            ':lines': batch.lines,
            ':dropped': batch.dropped ?? 0,
          },
        }),
      );
    } catch (err) {
      if (err instanceof ConditionalCheckFailedException) return;
      translate(err);
    }
  }

  async listTaskLogs(jobId: string): Promise<TaskLogBatch[]> {
    const job = await this.jobItem(jobId);
    if (!job) return [];
    const claims = claimsOf(job);
    // Only the claims the job lists: an agent may create items in its own partition at will.
    const listed = new Set(claims.map(claimName));
    const batches: TaskLogBatch[] = [];
    for (const site of new Set(claims.map((c) => c.site))) {
      const items = await this.queryAll({
        KeyConditionExpression: 'pk = :pk AND begins_with(sk, :log)',
        ExpressionAttributeValues: {
          ':pk': claimKey({ site, jobId, claimId: '' }).pk,
          ':log': 'LOG#',
        },
      });
      for (const item of items) {
        const sk = item.sk as string;
        const at = sk.lastIndexOf('#');
        const claimId = sk.slice('LOG#'.length, at);
        if (!listed.has(`${site}/${claimId}`)) continue;
        const { agent, target, lines, dropped } = item as {
          agent?: string;
          target?: string;
          lines?: TaskLogBatch['lines'];
          dropped?: number;
        };
        batches.push({
          claimId,
          seq: Number(sk.slice(at + 1)),
          agent: agent ?? '',
          target: target ?? '',
          lines: lines ?? [],
          ...(dropped ? { dropped } : {}),
        });
      }
    }
    return batches.sort((a, b) =>
      a.claimId !== b.claimId ? (a.claimId < b.claimId ? -1 : 1) : a.seq - b.seq,
    );
  }

  /**
   * The agent's header item, then one item per target (split into parts of at most
   * INVENTORY_PART_BYTES when a target's record is bigger), so an inventory has no size ceiling.
   * Only targets whose record changed are written (a digest per part), and the parts of targets
   * that are gone are deleted, so an engine event costs a write or two, not the whole inventory.
   */
  async putAgent(agent: AgentRecord): Promise<void> {
    mustFit({ ...agentKey(agent.agent), gsi1sk: agent.agent }, 'the agent name');
    const { targets, ...header } = agent;
    const stored = new Map<string, string>();
    for (const item of await this.agentItems(agent.agent, 'sk, digest')) {
      if (typeof item.sk === 'string' && item.sk.startsWith('TARGET#')) {
        stored.set(item.sk, String(item.digest));
      }
    }
    const wanted = new Set<string>();
    for (const target of targets) {
      for (const part of inventoryParts(target)) {
        wanted.add(part.sk);
        if (stored.get(part.sk) === part.digest) continue;
        await this.doc
          .send(
            new PutCommand({
              TableName: this.tableName,
              Item: { pk: agentKey(agent.agent).pk, ...part },
            }),
          )
          .catch(translate);
      }
    }
    for (const sk of stored.keys()) {
      if (wanted.has(sk)) continue;
      await this.doc
        .send(
          new DeleteCommand({
            TableName: this.tableName,
            Key: { pk: agentKey(agent.agent).pk, sk },
          }),
        )
        .catch(translate);
    }
    await this.doc
      .send(
        new PutCommand({
          TableName: this.tableName,
          Item: { ...agentKey(agent.agent), gsi1pk: 'AGENTS', gsi1sk: agent.agent, ...header },
        }),
      )
      .catch(translate);
  }

  async getAgent(agent: string): Promise<AgentRecord | undefined> {
    if (!storableId(agent)) return undefined;
    return assembleAgent(await this.agentItems(agent));
  }

  async listAgents(): Promise<AgentRecord[]> {
    const headers = await this.queryIndex('gsi1', 'gsi1pk', 'AGENTS', 1000, 'AGENT#', true);
    const agents: AgentRecord[] = [];
    for (const header of headers) {
      // The header of its own partition: an agent writes its header, and could name another.
      const agent = String(header.agent);
      if (header.pk !== agentKey(agent).pk || header.sk !== 'AGENT') continue;
      const record = assembleAgent(await this.agentItems(agent));
      if (record) agents.push(record);
    }
    return agents;
  }

  /** Every item of an agent's partition: its header and its targets' parts. */
  private agentItems(agent: string, projection?: string): Promise<Record<string, unknown>[]> {
    return this.queryAll({
      KeyConditionExpression: 'pk = :pk',
      ExpressionAttributeValues: { ':pk': agentKey(agent).pk },
      ...(projection ? { ProjectionExpression: projection } : {}),
    });
  }

  /** Every item a query matches, read consistently, page after page. */
  private async queryAll(
    input: Omit<QueryCommandInput, 'TableName' | 'ConsistentRead' | 'ExclusiveStartKey'>,
  ): Promise<Record<string, unknown>[]> {
    const items: Record<string, unknown>[] = [];
    const pages = paginateQuery(
      { client: this.doc },
      { ...input, TableName: this.tableName, ConsistentRead: true },
    );
    try {
      for await (const page of pages)
        items.push(...((page.Items ?? []) as Record<string, unknown>[]));
    } catch (err) {
      translate(err);
    }
    return items;
  }

  /**
   * Up to `limit` items of an index's partition, newest first unless `ascending`; only items of
   * table partitions beginning with `pkPrefix` (an agent can give an item of its own partition
   * any index key, so a list never takes an item from a partition it does not list).
   */
  private async queryIndex(
    index: string,
    keyName: string,
    keyValue: string,
    limit: number,
    pkPrefix: string,
    ascending = false,
  ): Promise<Record<string, unknown>[]> {
    const items: Record<string, unknown>[] = [];
    let start: QueryCommandInput['ExclusiveStartKey'];
    do {
      const out = await this.doc
        .send(
          new QueryCommand({
            TableName: this.tableName,
            IndexName: index,
            KeyConditionExpression: '#k = :v',
            ExpressionAttributeNames: { '#k': keyName },
            ExpressionAttributeValues: { ':v': keyValue },
            ScanIndexForward: ascending,
            Limit: Math.min(limit - items.length, 100),
            ExclusiveStartKey: start,
          }),
        )
        .catch(translate);
      for (const item of out.Items ?? []) {
        if (typeof item.pk === 'string' && item.pk.startsWith(pkPrefix)) items.push(item);
      }
      start = out.LastEvaluatedKey;
    } while (start && items.length < limit);
    return items;
  }
}

/**
 * A target's record is stored as its JSON in one item, or in several parts when it is bigger
 * than this (an item holds 400 KB, keys and attribute names included).
 */
export const INVENTORY_PART_BYTES = 300 * 1024;

interface InventoryPart {
  sk: string;
  target: string;
  digest: string;
  part: number;
  parts: number;
  data: Uint8Array;
}

/**
 * The items of one target: sort key `TARGET#<hash of the target key>#<part>` (a target key may
 * be longer than a sort key may), each carrying the digest of the whole record, so a reader
 * never joins parts of two versions and a writer skips what did not change.
 */
function inventoryParts(target: InventoryTarget): InventoryPart[] {
  const json = Buffer.from(JSON.stringify(target), 'utf8');
  const digest = createHash('sha256').update(json).digest('hex');
  const id = createHash('sha256').update(target.target).digest('hex').slice(0, 40);
  const parts = Math.max(1, Math.ceil(json.length / INVENTORY_PART_BYTES));
  return Array.from({ length: parts }, (_, part) => ({
    sk: `TARGET#${id}#${part}`,
    target: target.target,
    digest,
    part,
    parts,
    data: json.subarray(part * INVENTORY_PART_BYTES, (part + 1) * INVENTORY_PART_BYTES),
  }));
}

/** An agent's record from its partition's items; undefined without a header. */
function assembleAgent(items: Record<string, unknown>[]): AgentRecord | undefined {
  const header = items.find((i) => i.sk === 'AGENT');
  if (!header) return undefined;
  const byVersion = new Map<string, InventoryPart[]>();
  for (const item of items) {
    if (typeof item.sk !== 'string' || !item.sk.startsWith('TARGET#')) continue;
    const part = item as unknown as InventoryPart;
    const key = `${part.target}\u0000${part.digest}`;
    byVersion.set(key, [...(byVersion.get(key) ?? []), part]);
  }
  const targets: InventoryTarget[] = [];
  for (const parts of byVersion.values()) {
    // A target being rewritten while this read: its parts of one version are not all there yet.
    if (parts.length !== parts[0]!.parts) continue;
    parts.sort((a, b) => a.part - b.part);
    const json = Buffer.concat(parts.map((p) => Buffer.from(p.data))).toString('utf8');
    targets.push(JSON.parse(json) as InventoryTarget);
  }
  targets.sort((a, b) => (a.target < b.target ? -1 : a.target > b.target ? 1 : 0));
  const record = strip<Omit<AgentRecord, 'targets'> & { targets?: unknown }>(header)!;
  // Written before targets had items of their own: the next report replaces it.
  delete record.targets;
  return { ...record, targets };
}

/** The CreateTable input for the catalog, from the shared definition (local mode uses it). */
export function catalogTableInput(tableName: string) {
  const { partitionKey, sortKey, globalIndexes } = CATALOG_TABLE;
  const attrs = [partitionKey, sortKey, ...globalIndexes.flatMap((ix) => [`${ix}pk`, `${ix}sk`])];
  return {
    TableName: tableName,
    BillingMode: 'PAY_PER_REQUEST' as const,
    AttributeDefinitions: attrs.map((AttributeName) => ({
      AttributeName,
      AttributeType: 'S' as const,
    })),
    KeySchema: [
      { AttributeName: partitionKey, KeyType: 'HASH' as const },
      { AttributeName: sortKey, KeyType: 'RANGE' as const },
    ],
    GlobalSecondaryIndexes: globalIndexes.map((ix) => ({
      IndexName: ix,
      KeySchema: [
        { AttributeName: `${ix}pk`, KeyType: 'HASH' as const },
        { AttributeName: `${ix}sk`, KeyType: 'RANGE' as const },
      ],
      Projection: { ProjectionType: 'ALL' as const },
    })),
  };
}
