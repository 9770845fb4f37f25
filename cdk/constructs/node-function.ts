/**
 * A Lambda function bundled from functions/<folder>/handler.ts with the defaults every Stowage
 * function shares: Node.js 22 on arm64, 256 MB, 30 s, its own log group with a retention, X-Ray
 * tracing, and the AWS SDK v3 left out of the bundle because the runtime provides it.
 *
 * Its role starts with nothing but writing to its own log group (not the AWS managed
 * AWSLambdaBasicExecutionRole, which may create any log group); callers grant the rest.
 *
 * Bundling uses the esbuild in node_modules (no Docker). The output is ESM, matching the
 * package's `"type": "module"`.
 */
import { join } from 'node:path';
import { Duration, RemovalPolicy } from 'aws-cdk-lib';
import { Role, ServicePrincipal } from 'aws-cdk-lib/aws-iam';
import { Architecture, Runtime, Tracing } from 'aws-cdk-lib/aws-lambda';
import { NodejsFunction, OutputFormat } from 'aws-cdk-lib/aws-lambda-nodejs';
import { LogGroup } from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';
import { FUNCTIONS } from '../../kernel/resources';
import { acknowledge } from '../nag';
import { LOG_RETENTION, REPO_ROOT, handlerEntry } from '../project';

export type FunctionFolder = (typeof FUNCTIONS)[keyof typeof FUNCTIONS];

export interface NodeFunctionProps {
  /** The folder under functions/ that holds handler.ts. */
  readonly folder: FunctionFolder;
  readonly description: string;
  readonly environment?: Record<string, string>;
}

/**
 * Bundled CommonJS dependencies may still call `require` for Node built-ins, which an ES module
 * does not have; this gives them one (the banner AWS documents for ESM bundles).
 */
const ESM_REQUIRE_BANNER =
  "import { createRequire as __stowageCreateRequire } from 'node:module';" +
  'const require = __stowageCreateRequire(import.meta.url);';

export class NodeFunction extends Construct {
  readonly fn: NodejsFunction;
  readonly logGroup: LogGroup;
  readonly role: Role;

  constructor(scope: Construct, id: string, props: NodeFunctionProps) {
    super(scope, id);

    this.logGroup = new LogGroup(this, 'Logs', {
      retention: LOG_RETENTION,
      removalPolicy: RemovalPolicy.DESTROY,
    });

    this.role = new Role(this, 'Role', {
      assumedBy: new ServicePrincipal('lambda.amazonaws.com'),
      description: `${props.description} (function role)`,
    });
    this.logGroup.grantWrite(this.role);

    this.fn = new NodejsFunction(this, 'Function', {
      role: this.role,
      entry: handlerEntry(props.folder),
      handler: 'handler',
      description: props.description,
      runtime: Runtime.NODEJS_22_X,
      architecture: Architecture.ARM_64,
      memorySize: 256,
      timeout: Duration.seconds(30),
      tracing: Tracing.ACTIVE,
      logGroup: this.logGroup,
      projectRoot: REPO_ROOT,
      depsLockFilePath: join(REPO_ROOT, 'package-lock.json'),
      environment: { NODE_OPTIONS: '--enable-source-maps', ...props.environment },
      bundling: {
        format: OutputFormat.ESM,
        target: 'node22',
        mainFields: ['module', 'main'],
        banner: ESM_REQUIRE_BANNER,
        externalModules: ['@aws-sdk/*'],
        minify: true,
        // Errors carry literal names for ASL anyway; kept names make stack traces readable.
        keepNames: true,
        sourceMap: true,
        sourcesContent: false,
      },
    });

    acknowledge(
      this,
      'AwsSolutions-L1',
      'Pinned to nodejs22.x on purpose: the bundles rely on the SDK v3 the runtime provides, so a ' +
        'runtime upgrade is a deliberate, tested change rather than a side effect of a CDK upgrade.',
    );
    acknowledge(
      this,
      'AwsSolutions-IAM5',
      'X-Ray PutTraceSegments/PutTelemetryRecords support no resource-level permissions.',
      'Resource::*',
    );
  }
}
