/**
 * The store: the agents' repository of sealed packs, indexes and point manifests (key layout:
 * kernel/object-layout.ts). Agents write to it directly over HTTPS; nothing in it is ever
 * public.
 *
 * Nothing written is ever lost to one credential:
 *
 * - Versioning is on. Every key is written once (agents send `If-None-Match: *`, and the bucket
 *   policy that AgentAccess adds refuses their object-creating puts without it), so versions
 *   only appear if something overwrites or deletes, and then the old version stays.
 * - Deleting a version is denied to every principal by the bucket policy: a delete (only the
 *   maintenance role has s3:DeleteObject, for prunes) leaves a delete marker, and S3's
 *   lifecycle removes the noncurrent version `noncurrentVersionDays` later. Until then an
 *   operator can undo any deletion (remove the delete marker). Freeing space for good is
 *   lifecycle's job alone, which no bucket policy or stolen key can hurry.
 * - Optional Object Lock (context `stowage:objectLock`: `governance` or `compliance`, with
 *   `stowage:objectLockDays`, default BACKUP_BUCKET.objectLockDays): every version is retained
 *   that long from its creation. A prune's delete marker is allowed (S3 permits delete markers
 *   over locked versions), and the locked version itself is only removed by lifecycle once both
 *   its retention has run out and it has been noncurrent for `noncurrentVersionDays`. Object
 *   Lock can only be chosen when the bucket is created: turning it on in a deployed stack
 *   replaces the bucket (or enable it on the existing bucket by hand in S3).
 *
 * Encryption at rest stays S3-managed (SSE-S3), on purpose, not SSE-KMS with the DataKey: the
 * agents already seal every object with the repository data key, which only the KMS data key can
 * unwrap (envelope encryption, DataKey), so the bucket only ever stores ciphertext. SSE-KMS would
 * add no secrecy to that, yet every PUT would need kms:GenerateDataKey and every GET kms:Decrypt
 * on the key, for every principal that touches the bucket, and cost KMS requests per object.
 *
 * Server access logs go to a bucket of their own (each request: who, what key, when), kept a
 * year.
 */
import { Duration, RemovalPolicy } from 'aws-cdk-lib';
import { AnyPrincipal, Effect, PolicyStatement } from 'aws-cdk-lib/aws-iam';
import {
  BlockPublicAccess,
  Bucket,
  BucketEncryption,
  ObjectLockRetention,
  ObjectOwnership,
} from 'aws-cdk-lib/aws-s3';
import { Construct } from 'constructs';
import { BACKUP_BUCKET } from '../../kernel/resources';
import { acknowledge } from '../nag';

export const OBJECT_LOCK_CONTEXT_KEY = 'stowage:objectLock';
export const OBJECT_LOCK_DAYS_CONTEXT_KEY = 'stowage:objectLockDays';
export const NONCURRENT_DAYS_CONTEXT_KEY = 'stowage:noncurrentDays';

export type ObjectLockMode = 'governance' | 'compliance';

/** How long access logs are kept: a year covers an incident found late. */
const ACCESS_LOG_DAYS = 365;

export interface BackupBucketProps {
  /** Object Lock's mode and default retention; undefined leaves it off. */
  readonly objectLock?: { mode: ObjectLockMode; days: number };
  /** Days a noncurrent version is kept (BACKUP_BUCKET.noncurrentVersionDays by default). */
  readonly noncurrentDays?: number;
}

export class BackupBucket extends Construct {
  readonly bucket: Bucket;
  readonly accessLogs: Bucket;
  readonly objectLock: { mode: ObjectLockMode; days: number } | undefined;

  constructor(scope: Construct, id: string, props: BackupBucketProps = {}) {
    super(scope, id);
    this.objectLock = props.objectLock;

    this.accessLogs = new Bucket(this, 'AccessLogs', {
      blockPublicAccess: BlockPublicAccess.BLOCK_ALL,
      enforceSSL: true,
      minimumTLSVersion: 1.2,
      encryption: BucketEncryption.S3_MANAGED,
      objectOwnership: ObjectOwnership.BUCKET_OWNER_ENFORCED,
      lifecycleRules: [{ id: 'expire-access-logs', expiration: Duration.days(ACCESS_LOG_DAYS) }],
      removalPolicy: RemovalPolicy.RETAIN,
    });
    acknowledge(
      this.accessLogs,
      'AwsSolutions-S1',
      'This is the access log bucket of the backup bucket; logging it into itself would loop.',
    );

    const lock = props.objectLock;
    this.bucket = new Bucket(this, 'Bucket', {
      blockPublicAccess: BlockPublicAccess.BLOCK_ALL,
      enforceSSL: true,
      minimumTLSVersion: 1.2,
      encryption: BucketEncryption.S3_MANAGED,
      versioned: true,
      serverAccessLogsBucket: this.accessLogs,
      serverAccessLogsPrefix: 'store/',
      ...(lock
        ? {
            objectLockEnabled: true,
            objectLockDefaultRetention:
              lock.mode === 'compliance'
                ? ObjectLockRetention.compliance(Duration.days(lock.days))
                : ObjectLockRetention.governance(Duration.days(lock.days)),
          }
        : {}),
      lifecycleRules: [
        {
          id: 'abort-incomplete-multipart-uploads',
          abortIncompleteMultipartUploadAfter: Duration.days(
            BACKUP_BUCKET.abortIncompleteMultipartUploadDays,
          ),
        },
        {
          id: 'expire-deleted-versions',
          noncurrentVersionExpiration: Duration.days(
            props.noncurrentDays ?? BACKUP_BUCKET.noncurrentVersionDays,
          ),
          expiredObjectDeleteMarker: true,
        },
      ],
      // Backups must outlive the stack that made them.
      removalPolicy: RemovalPolicy.RETAIN,
      autoDeleteObjects: false,
    });

    // No principal may delete a version or shorten a governance retention: deletions stay undoable for
    // the noncurrent window, and only lifecycle (which bucket policies do not bind) frees space.
    this.bucket.addToResourcePolicy(
      new PolicyStatement({
        sid: 'NoVersionIsDeletedButByLifecycle',
        effect: Effect.DENY,
        principals: [new AnyPrincipal()],
        // Not s3:PutObjectRetention: a retention can only be lengthened without the bypass.
        actions: ['s3:DeleteObjectVersion', 's3:BypassGovernanceRetention'],
        resources: [this.bucket.arnForObjects('*')],
      }),
    );
  }
}

/** Object Lock from the `stowage:objectLock` and `stowage:objectLockDays` context, or undefined. */
export function objectLockFromContext(
  scope: Construct,
): { mode: ObjectLockMode; days: number } | undefined {
  const mode: unknown = scope.node.tryGetContext(OBJECT_LOCK_CONTEXT_KEY);
  if (mode === undefined || mode === null || mode === '' || mode === 'off') return undefined;
  if (mode !== 'governance' && mode !== 'compliance') {
    throw new Error(
      `${OBJECT_LOCK_CONTEXT_KEY} must be governance, compliance or off, got ${JSON.stringify(mode)}`,
    );
  }
  return {
    mode,
    days: positiveDays(scope, OBJECT_LOCK_DAYS_CONTEXT_KEY, BACKUP_BUCKET.objectLockDays),
  };
}

/** A whole number of days from the context, or `fallback`. */
export function positiveDays(scope: Construct, key: string, fallback: number): number {
  const value: unknown = scope.node.tryGetContext(key);
  if (value === undefined || value === null) return fallback;
  const days = Number(value);
  if (!Number.isInteger(days) || days < 1 || days > 36500) {
    throw new Error(`${key} must be a whole number of days from 1, got ${JSON.stringify(value)}`);
  }
  return days;
}
