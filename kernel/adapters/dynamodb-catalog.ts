/**
 * The Catalog port on DynamoDB: the one module that knows the table's key schema.
 *
 *   item        pk                 sk       gsi1pk    gsi1sk             gsi2pk           gsi2sk
 *   job         JOB#<jobId>        JOB      JOBS      <createdAt>#<id>
 *   point       POINT#<pointId>    POINT    POINTS    <createdAt>#<id>   TARGET#<target>  <createdAt>#<id>
 *   agent       AGENT#<name>       AGENT    AGENTS    <name>   (its header: platforms, seenAt)
 *   inventory   AGENT#<name>       TARGET#<hash of target>#<part>   (one per target, or its parts)
 *   policy      POLICY#<name>      POLICY   POLICIES  <name>
 *   task claim  JOB#<jobId>        CLAIM#<claimId>       (a claimed task's run token, read once,
 *                                                         then who took it, when, how it ended)
 *
 * IAM for agents limits them to the JOB# and AGENT# partitions (dynamodb:LeadingKeys).
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
import type { Catalog, JobItemUpdate, JobUpdate } from '../catalog';
import { createHash } from 'node:crypto';
import type {
  AgentRecord,
  InventoryTarget,
  Job,
  Policy,
  RecoveryPoint,
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
const claimKey = (jobId: string, claimId: string) => ({
  pk: `JOB#${jobId}`,
  sk: `CLAIM#${claimId}`,
});

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
    if (!storableId(jobId)) return undefined;
    const out = await this.doc
      .send(new GetCommand({ TableName: this.tableName, Key: jobKey(jobId), ConsistentRead: true }))
      .catch(translate);
    return strip<Job>(out.Item);
  }

  async listJobs(options: { limit?: number } = {}): Promise<Job[]> {
    return this.queryIndex<Job>('gsi1', 'gsi1pk', 'JOBS', options.limit ?? 100);
  }

  async updateJob(
    jobId: string,
    update: JobUpdate,
    whenStatus: readonly JobStatus[],
  ): Promise<Job | undefined> {
    if (!storableId(jobId)) return undefined;
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
      return strip<Job>(out.Attributes);
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
    // Items that complete while this reads make the condition fail: read again, a few times.
    for (let attempt = 0; attempt < 5; attempt++) {
      const job = await this.getJob(jobId);
      if (!job) return undefined;
      const open = (job.items ?? []).flatMap((item, i) => (item.status === 'COMPLETED' ? [] : [i]));
      const names: Record<string, string> = {
        '#status': 'status',
        '#endedAt': 'endedAt',
        '#error': 'error',
        '#asked': 'cancelRequestedAt',
        '#noReturn': 'pointOfNoReturnAt',
        ...(open.length ? { '#items': 'items', '#istatus': 'status' } : {}),
      };
      const values: Record<string, unknown> = {
        ':cancelled': 'CANCELLED',
        ':endedAt': end.endedAt,
        ':error': end.error,
        ':asked': end.cancelRequestedAt,
        ':pending': 'PENDING',
        ':running': 'RUNNING',
        ...(open.length ? { ':completed': 'COMPLETED' } : {}),
      };
      const sets = [
        '#status = :cancelled',
        '#endedAt = :endedAt',
        '#error = :error',
        '#asked = :asked',
        ...open.map((i) => `#items[${i}].#istatus = :cancelled`),
      ];
      const conditions = [
        'attribute_exists(pk)',
        '#status IN (:pending, :running)',
        'attribute_not_exists(#noReturn)',
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
        return strip<Job>(out.Attributes);
      } catch (err) {
        if (!(err instanceof ConditionalCheckFailedException)) translate(err);
      }
      const now = await this.getJob(jobId);
      if (!now || !['PENDING', 'RUNNING'].includes(now.status) || now.pointOfNoReturnAt) {
        return undefined;
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
    return options.target
      ? this.queryIndex<RecoveryPoint>('gsi2', 'gsi2pk', `TARGET#${options.target}`, limit)
      : this.queryIndex<RecoveryPoint>('gsi1', 'gsi1pk', 'POINTS', limit);
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
    return this.queryIndex<Policy>('gsi1', 'gsi1pk', 'POLICIES', 1000, true);
  }

  async deletePolicy(name: string): Promise<void> {
    if (!storableId(name)) return;
    await this.doc
      .send(new DeleteCommand({ TableName: this.tableName, Key: policyKey(name) }))
      .catch(translate);
  }

  async putRunToken(jobId: string, claimId: string, taskToken: string): Promise<void> {
    mustFit(claimKey(jobId, claimId), 'the job or claim id');
    await this.doc
      .send(
        new PutCommand({
          TableName: this.tableName,
          Item: {
            ...claimKey(jobId, claimId),
            taskToken,
            handedOverAt: new Date().toISOString(),
          },
        }),
      )
      .catch(translate);
  }

  async takeRunToken(jobId: string, claimId: string, agent?: string): Promise<string | undefined> {
    if (!keysFit(claimKey(jobId, claimId))) return undefined;
    // An UpdateItem that removes the token (agents may Get/Put/Update their rows, not delete).
    try {
      const out = await this.doc.send(
        new UpdateCommand({
          TableName: this.tableName,
          Key: claimKey(jobId, claimId),
          UpdateExpression: `REMOVE taskToken SET takenAt = :now${agent ? ', #agent = :agent' : ''}`,
          ConditionExpression: 'attribute_exists(taskToken)',
          ...(agent ? { ExpressionAttributeNames: { '#agent': 'agent' } } : {}),
          ExpressionAttributeValues: {
            ':now': new Date().toISOString(),
            ...(agent ? { ':agent': agent } : {}),
          },
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

  async endTask(
    jobId: string,
    claimId: string,
    end: { endedAt: string; outcome: NonNullable<TaskRecord['outcome']> },
  ): Promise<void> {
    if (!keysFit(claimKey(jobId, claimId))) return;
    try {
      await this.doc.send(
        new UpdateCommand({
          TableName: this.tableName,
          Key: claimKey(jobId, claimId),
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
    if (!storableId(jobId)) return [];
    const items = await this.queryAll({
      KeyConditionExpression: 'pk = :pk AND begins_with(sk, :claim)',
      ExpressionAttributeValues: { ':pk': `JOB#${jobId}`, ':claim': 'CLAIM#' },
    });
    const tasks: TaskRecord[] = items.map((item) => {
      const { sk, handedOverAt, agent, takenAt, endedAt, outcome } = item as Record<
        string,
        string | undefined
      >;
      return {
        claimId: sk!.slice('CLAIM#'.length),
        handedOverAt: handedOverAt ?? '',
        ...(agent ? { agent } : {}),
        ...(takenAt ? { takenAt } : {}),
        ...(endedAt ? { endedAt } : {}),
        ...(outcome ? { outcome: outcome as NonNullable<TaskRecord['outcome']> } : {}),
      };
    });
    return tasks.sort((a, b) => a.handedOverAt.localeCompare(b.handedOverAt));
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
    const headers = await this.queryIndex<{ agent: string }>(
      'gsi1',
      'gsi1pk',
      'AGENTS',
      1000,
      true,
    );
    const agents: AgentRecord[] = [];
    for (const { agent } of headers) {
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

  private async queryIndex<T>(
    index: string,
    keyName: string,
    keyValue: string,
    limit: number,
    ascending = false,
  ): Promise<T[]> {
    const items: T[] = [];
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
      for (const item of out.Items ?? []) items.push(strip<T>(item) as T);
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
