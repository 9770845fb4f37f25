/**
 * The KMS key of the repository's envelope encryption. The agents seal every chunk, index and
 * manifest with one data key; the bucket holds that data key only as KMS ciphertext
 * (keys/data-key.kms, kernel/object-layout.ts), which this key wraps. Whoever cannot have
 * KMS decrypt it cannot read anything in the bucket, whatever their S3 permissions.
 *
 * The key policy keeps cryptographic use narrow: the account may administer the key (so the key
 * can never become unmanageable), but the only cryptographic operations it allows are the two
 * the agents use, kms:GenerateDataKey (first agent of an empty repository) and kms:Decrypt, only
 * under the encryption context the agents pass, and only to the roles it names (`allowUse`: the
 * site roles and the maintenance role of AgentAccess), not to the account: no other IAM policy
 * can grant them. No Lambda ever gets KMS permissions, as none of them reads sealed data.
 */
import { DATA_KEY } from '../../kernel/resources';
import { RemovalPolicy } from 'aws-cdk-lib';
import {
  AccountRootPrincipal,
  type IRole,
  PolicyDocument,
  PolicyStatement,
} from 'aws-cdk-lib/aws-iam';
import { Key, KeySpec, KeyUsage } from 'aws-cdk-lib/aws-kms';
import { Construct } from 'constructs';

export const DATA_KEY_ALIAS = DATA_KEY.alias;

/**
 * The encryption context agents/repo/kms-key.ts passes with every GenerateDataKey and Decrypt: it
 * binds the wrapped data key to this one use, so the key cannot be used to decrypt anything else.
 */
export const DATA_KEY_ENCRYPTION_CONTEXT = DATA_KEY.encryptionContext;

/** The cryptographic operations the agents need on the key, and nobody else gets. */
export const DATA_KEY_USE_ACTIONS = ['kms:Decrypt', 'kms:GenerateDataKey'] as const;

/** The IAM condition every grant of DATA_KEY_USE_ACTIONS carries. */
export const DATA_KEY_USE_CONDITION = {
  StringEquals: Object.fromEntries(
    Object.entries(DATA_KEY_ENCRYPTION_CONTEXT).map(([k, v]) => [`kms:EncryptionContext:${k}`, v]),
  ),
};

/**
 * Key administration, for whatever the account's IAM allows (CloudFormation among them): no
 * encryption, decryption or data-key operation, and no kms:CreateGrant (a grant would hand
 * cryptographic use past this policy).
 */
const ADMIN_ACTIONS = [
  'kms:DescribeKey',
  'kms:GetKeyPolicy',
  'kms:PutKeyPolicy',
  'kms:ListKeyPolicies',
  'kms:GetKeyRotationStatus',
  'kms:EnableKeyRotation',
  'kms:DisableKeyRotation',
  'kms:ListKeyRotations',
  'kms:RotateKeyOnDemand',
  'kms:CreateAlias',
  'kms:UpdateAlias',
  'kms:DeleteAlias',
  'kms:ListResourceTags',
  'kms:TagResource',
  'kms:UntagResource',
  'kms:UpdateKeyDescription',
  'kms:EnableKey',
  'kms:DisableKey',
  'kms:ListGrants',
  'kms:RevokeGrant',
  'kms:ScheduleKeyDeletion',
  'kms:CancelKeyDeletion',
];

export class DataKey extends Construct {
  readonly key: Key;

  constructor(scope: Construct, id: string) {
    super(scope, id);

    const account = new AccountRootPrincipal();
    this.key = new Key(this, 'Key', {
      description: 'Stowage: wraps the repository data key that agents seal backup data with',
      keySpec: KeySpec.SYMMETRIC_DEFAULT,
      keyUsage: KeyUsage.ENCRYPT_DECRYPT,
      enableKeyRotation: true,
      alias: DATA_KEY_ALIAS,
      // Without this key every backup in the bucket is unreadable: it outlives the stack, like
      // the bucket and the catalog.
      removalPolicy: RemovalPolicy.RETAIN,
      policy: new PolicyDocument({
        statements: [
          new PolicyStatement({
            sid: 'AdministerKey',
            principals: [account],
            actions: ADMIN_ACTIONS,
            resources: ['*'],
          }),
        ],
      }),
    });
  }

  /**
   * Names `roles` in the key policy as the only principals that may use the key, for the
   * repository data key's encryption context only. Called once, with every role that may.
   */
  allowUse(roles: readonly IRole[]): void {
    this.key.addToResourcePolicy(
      new PolicyStatement({
        sid: 'UseForRepositoryDataKeyOnly',
        principals: roles.map((r) => r.grantPrincipal),
        actions: [...DATA_KEY_USE_ACTIONS],
        resources: ['*'],
        conditions: DATA_KEY_USE_CONDITION,
      }),
    );
  }
}
