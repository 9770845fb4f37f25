/**
 * The catalog: one DynamoDB table holding policies, targets, jobs, recovery points and agents,
 * keyed as kernel/adapters/dynamodb-catalog.ts describes. Its key and index names come from
 * CATALOG_TABLE, which local mode uses to create the same table in its emulator.
 */
import { RemovalPolicy } from 'aws-cdk-lib';
import { AttributeType, BillingMode, ProjectionType, Table } from 'aws-cdk-lib/aws-dynamodb';
import { type IGrantable, PolicyStatement } from 'aws-cdk-lib/aws-iam';
import { Construct } from 'constructs';
import { CATALOG_TABLE } from '../../kernel/resources';

/** Item reads and writes, queries on the indexes; no table administration, no streams. */
const READ_WRITE_ACTIONS = [
  'dynamodb:BatchGetItem',
  'dynamodb:GetItem',
  'dynamodb:Query',
  'dynamodb:Scan',
  'dynamodb:ConditionCheckItem',
  'dynamodb:DescribeTable',
  'dynamodb:BatchWriteItem',
  'dynamodb:PutItem',
  'dynamodb:UpdateItem',
  'dynamodb:DeleteItem',
];

export class CatalogTable extends Construct {
  readonly table: Table;

  constructor(scope: Construct, id: string) {
    super(scope, id);

    this.table = new Table(this, 'Table', {
      partitionKey: { name: CATALOG_TABLE.partitionKey, type: AttributeType.STRING },
      sortKey: { name: CATALOG_TABLE.sortKey, type: AttributeType.STRING },
      billingMode: BillingMode.PAY_PER_REQUEST,
      pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
      // The catalog is the only index of what the bucket holds: losing it orphans every point.
      removalPolicy: RemovalPolicy.RETAIN,
    });

    for (const index of CATALOG_TABLE.globalIndexes) {
      this.table.addGlobalSecondaryIndex({
        indexName: index,
        partitionKey: { name: `${index}pk`, type: AttributeType.STRING },
        sortKey: { name: `${index}sk`, type: AttributeType.STRING },
        projectionType: ProjectionType.ALL,
      });
    }
  }

  /**
   * Read/write on the items of the table and its indexes, each index named (Table's own
   * grantReadWriteData grants `index/*`).
   */
  grantReadWriteData(grantee: IGrantable): void {
    const { tableArn } = this.table;
    grantee.grantPrincipal.addToPrincipalPolicy(
      new PolicyStatement({
        actions: READ_WRITE_ACTIONS,
        resources: [
          tableArn,
          ...CATALOG_TABLE.globalIndexes.map((index) => `${tableArn}/index/${index}`),
        ],
      }),
    );
  }
}
