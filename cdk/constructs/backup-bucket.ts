/**
 * The store: the agents' repository of sealed packs, indexes and point manifests (key layout:
 * kernel/object-layout.ts). Agents write to it directly over HTTPS; nothing in it is ever
 * public. Versioning stays off because every key is written once, by the job that owns it, and
 * retention is the catalog's job, not S3's.
 *
 * Encryption at rest stays S3-managed (SSE-S3), on purpose, not SSE-KMS with the DataKey: the
 * agents already seal every object with the repository data key, which only the KMS data key can
 * unwrap (envelope encryption, DataKey), so the bucket only ever stores ciphertext. SSE-KMS would
 * add no secrecy to that, yet every PUT would need kms:GenerateDataKey and every GET kms:Decrypt
 * on the key, for every principal that touches the bucket, and cost KMS requests per object.
 */
import { Duration, RemovalPolicy, Validations } from 'aws-cdk-lib';
import { BlockPublicAccess, Bucket, BucketEncryption } from 'aws-cdk-lib/aws-s3';
import { Construct } from 'constructs';
import { BACKUP_BUCKET } from '../../kernel/resources';

export class BackupBucket extends Construct {
  readonly bucket: Bucket;

  constructor(scope: Construct, id: string) {
    super(scope, id);

    this.bucket = new Bucket(this, 'Bucket', {
      blockPublicAccess: BlockPublicAccess.BLOCK_ALL,
      enforceSSL: true,
      minimumTLSVersion: 1.2,
      encryption: BucketEncryption.S3_MANAGED,
      versioned: false,
      lifecycleRules: [
        {
          id: 'abort-incomplete-multipart-uploads',
          abortIncompleteMultipartUploadAfter: Duration.days(
            BACKUP_BUCKET.abortIncompleteMultipartUploadDays,
          ),
        },
      ],
      // Backups must outlive the stack that made them.
      removalPolicy: RemovalPolicy.RETAIN,
      autoDeleteObjects: false,
    });

    // Deliberately not BucketEncryption.KMS: see the top of this file.
    Validations.of(this.bucket).acknowledge({
      id: 'AwsSolutions-S1',
      reason:
        'No server access log bucket yet: only roles of this stack (agent role, commit-point) ' +
        'can reach the bucket, and CloudTrail S3 data events can audit them per object; access ' +
        'logging is to be decided together with the Object Lock work.',
    });
  }
}
