/**
 * The HTTP API: API Gateway REST API in front of the `api` function, every method behind IAM
 * (SigV4) auth, so the CLI and the console sign their requests with the caller's credentials and
 * the function never sees an unauthenticated request.
 *
 * Its resources and methods are those of the OpenAPI document (functions/api/openapi.json), each
 * with the document's body schema as a request model and its parameters, validated by API Gateway
 * before the function runs (cdk/openapi-models.ts); every method goes to the one function, which
 * routes and validates again by itself (the same handler serves local mode, where there is no
 * API Gateway). A path the document does not have never reaches the function.
 *
 * Two managed policies are shipped for the people and scripts who call it: `operatorPolicy`
 * (every method) and `viewerPolicy` (GET only: lists, points, jobs, policies; nothing that starts,
 * changes or deletes anything).
 *
 * CORS admits one origin, the web console's CloudFront distribution (`corsOrigin`): API Gateway
 * answers the preflights itself (MOCK OPTIONS methods, which by the Fetch standard carry no
 * credentials), its own error answers (a bad signature's 403, a throttle's 429) carry the header
 * so the console can read them, and the function adds it to its answers (CONSOLE_ORIGIN).
 */
import { Duration, RemovalPolicy } from 'aws-cdk-lib';
import {
  AccessLogFormat,
  AuthorizationType,
  type CorsOptions,
  ResponseType,
  EndpointType,
  LambdaIntegration,
  JsonSchemaVersion,
  LogGroupLogDestination,
  MethodLoggingLevel,
  type IResource,
  type JsonSchema,
  RequestValidator,
  RestApi,
} from 'aws-cdk-lib/aws-apigateway';
import { ManagedPolicy, PolicyStatement } from 'aws-cdk-lib/aws-iam';
import type { IFunction } from 'aws-cdk-lib/aws-lambda';
import { LogGroup } from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';
import { acknowledge, nagRef } from '../nag';
import { apiOperations } from '../openapi-models';
import { LOG_RETENTION } from '../project';

/**
 * Stage-wide method throttling. The API is a control plane for people and scripts (start a
 * backup, list points, follow a job), not a data path: tens of requests a second is plenty, and a
 * runaway script should hit 429 before it runs up Lambda and DynamoDB bills.
 */
export const API_THROTTLING = { rateLimit: 50, burstLimit: 100 } as const;

/**
 * What the console's cross-origin calls need: its methods, and the SigV4 headers it signs (the
 * payload hash is not sent: API Gateway does not need it). Preflights are cached ten minutes.
 */
export const API_CORS = {
  allowMethods: ['GET', 'POST', 'PATCH', 'DELETE'],
  allowHeaders: ['Authorization', 'Content-Type', 'X-Amz-Date', 'X-Amz-Security-Token'],
  maxAgeSeconds: 600,
} as const;

export interface HttpApiProps {
  readonly handler: IFunction;
  /** The one origin allowed to call the API from a browser (the console's), if any. */
  readonly corsOrigin?: string;
}

export class HttpApi extends Construct {
  readonly restApi: RestApi;
  readonly accessLogs: LogGroup;
  /** execute-api:Invoke on every method of the API. */
  readonly operatorPolicy: ManagedPolicy;
  /** execute-api:Invoke on the GET methods only. */
  readonly viewerPolicy: ManagedPolicy;

  constructor(scope: Construct, id: string, props: HttpApiProps) {
    super(scope, id);

    this.accessLogs = new LogGroup(this, 'AccessLogs', {
      retention: LOG_RETENTION,
      removalPolicy: RemovalPolicy.DESTROY,
    });

    this.restApi = new RestApi(this, 'RestApi', {
      description: 'Stowage HTTP API (IAM auth)',
      endpointConfiguration: { types: [EndpointType.REGIONAL] },
      defaultMethodOptions: { authorizationType: AuthorizationType.IAM },
      ...(props.corsOrigin ? { defaultCorsPreflightOptions: corsOptions(props.corsOrigin) } : {}),
      // API Gateway writes stage logs through one account-wide role (AWS::ApiGateway::Account);
      // without it the stage below cannot log. It is retained because other APIs in the account
      // may rely on the same setting after this stack is gone.
      cloudWatchRole: true,
      cloudWatchRoleRemovalPolicy: RemovalPolicy.RETAIN,
      deployOptions: {
        accessLogDestination: new LogGroupLogDestination(this.accessLogs),
        accessLogFormat: AccessLogFormat.jsonWithStandardFields(),
        // Errors only, and never request or response bodies (dataTrace): they hold job details.
        loggingLevel: MethodLoggingLevel.ERROR,
        dataTraceEnabled: false,
        metricsEnabled: true,
        tracingEnabled: true,
        throttlingRateLimit: API_THROTTLING.rateLimit,
        throttlingBurstLimit: API_THROTTLING.burstLimit,
      },
    });

    if (props.corsOrigin) {
      // API Gateway's own refusals (unsigned, bad signature, denied, throttled, too large) reach
      // the console readable, so it can say why instead of a bare network error.
      for (const [id, type] of [
        ['Cors4xx', ResponseType.DEFAULT_4XX],
        ['Cors5xx', ResponseType.DEFAULT_5XX],
      ] as const) {
        this.restApi.addGatewayResponse(id, {
          type,
          responseHeaders: {
            'Access-Control-Allow-Origin': `'${props.corsOrigin}'`,
            Vary: "'Origin'",
          },
        });
      }
      acknowledge(
        this.restApi,
        'AwsSolutions-APIG4',
        'Only the CORS preflights (OPTIONS) are unauthenticated: by the Fetch standard a ' +
          'preflight carries no credentials. They are MOCK integrations that answer the CORS ' +
          'headers for the console origin and never reach the function; every other method ' +
          'needs SigV4.',
      );
    }

    // The stack outputs the URL once, as ApiUrl; drop RestApi's own unnamed copy.
    this.restApi.node.tryRemoveChild('Endpoint');

    const integration = new LambdaIntegration(props.handler, {
      proxy: true,
      // The console's "Test" button is not how this API is exercised; fewer invoke permissions.
      allowTestInvoke: false,
    });
    const validator = new RequestValidator(this, 'Validator', {
      restApi: this.restApi,
      requestValidatorName: 'openapi-body-and-parameters',
      validateRequestBody: true,
      validateRequestParameters: true,
    });
    const resources = new Map<string, IResource>([['/', this.restApi.root]]);
    const resourceFor = (path: string): IResource => {
      const known = resources.get(path);
      if (known) return known;
      const cut = path.lastIndexOf('/');
      const parent = resourceFor(path.slice(0, cut) || '/');
      const resource = parent.addResource(path.slice(cut + 1));
      resources.set(path, resource);
      return resource;
    };
    for (const op of apiOperations()) {
      const modelName = `${op.method}${op.path}`.replace(/[^A-Za-z0-9]/g, '');
      resourceFor(op.path).addMethod(op.method, integration, {
        requestValidator: validator,
        requestParameters: op.requestParameters,
        ...(op.bodySchema
          ? {
              requestModels: {
                'application/json': this.restApi.addModel(`${modelName}Body`, {
                  contentType: 'application/json',
                  modelName: `${modelName}Body`,
                  schema: { ...op.bodySchema, schema: JsonSchemaVersion.DRAFT4 } as JsonSchema,
                }),
              },
            }
          : {}),
      });
    }

    const invoke = (id: string, description: string, methods: string) =>
      new ManagedPolicy(this, id, {
        description,
        statements: [
          new PolicyStatement({
            actions: ['execute-api:Invoke'],
            resources: [
              this.restApi.arnForExecuteApi(methods, '/*', this.restApi.deploymentStage.stageName),
            ],
          }),
        ],
      });
    this.operatorPolicy = invoke(
      'OperatorPolicy',
      'Stowage operator: every method of the Stowage HTTP API (backups, restores, prunes, policies)',
      '*',
    );
    this.viewerPolicy = invoke(
      'ViewerPolicy',
      'Stowage viewer: the read-only GET methods of the Stowage HTTP API',
      'GET',
    );
    const stageArn =
      'arn:<AWS::Partition>:execute-api:<AWS::Region>:<AWS::AccountId>:' +
      `${nagRef(this.restApi)}/${nagRef(this.restApi.deploymentStage)}`;
    acknowledge(
      this.operatorPolicy,
      'AwsSolutions-IAM5',
      'The operator may call every method and path of this one API stage: that is the policy.',
      `Resource::${stageArn}/*/*`,
    );
    acknowledge(
      this.viewerPolicy,
      'AwsSolutions-IAM5',
      'The viewer may call the GET methods (read-only) of every path of this one API stage.',
      `Resource::${stageArn}/GET/*`,
    );

    acknowledge(
      this.restApi,
      'AwsSolutions-COG4',
      'Callers authenticate with IAM (SigV4), one way in for all: the CLI holds AWS ' +
        "credentials, and the console's users sign in to the user pool and sign with the " +
        "identity pool's credentials for their group's role (ConsoleSignIn), so a Cognito " +
        'authorizer would be a second, weaker door (no per-method IAM policy).',
    );
    acknowledge(
      this.restApi,
      'AwsSolutions-IAM4',
      'The account-wide API Gateway logging role uses the AWS policy made for exactly that role.',
      'Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs',
    );
    acknowledge(
      this.restApi,
      'AwsSolutions-APIG3',
      'No WAF yet: API Gateway rejects unsigned requests before anything runs, and the stage ' +
        'is throttled; a web ACL is for when the API faces more than operators and scripts.',
    );
  }

  get url(): string {
    return this.restApi.url;
  }
}

function corsOptions(origin: string): CorsOptions {
  return {
    allowOrigins: [origin],
    allowMethods: [...API_CORS.allowMethods],
    allowHeaders: [...API_CORS.allowHeaders],
    allowCredentials: false,
    maxAge: Duration.seconds(API_CORS.maxAgeSeconds),
  };
}
