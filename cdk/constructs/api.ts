/**
 * The HTTP API: API Gateway REST API in front of the `api` function, every method behind IAM
 * (SigV4) auth, so the CLI and the console sign their requests with the caller's credentials and
 * the function never sees an unauthenticated request. Root and `{proxy+}` both go to the one
 * function, which routes by path itself (the same handler serves the local HTTP server).
 */
import { RemovalPolicy } from 'aws-cdk-lib';
import {
  AccessLogFormat,
  AuthorizationType,
  EndpointType,
  LambdaIntegration,
  LogGroupLogDestination,
  MethodLoggingLevel,
  RestApi,
} from 'aws-cdk-lib/aws-apigateway';
import type { IFunction } from 'aws-cdk-lib/aws-lambda';
import { LogGroup } from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';
import { acknowledge } from '../nag';
import { LOG_RETENTION } from '../project';

/**
 * Stage-wide method throttling. The API is a control plane for people and scripts (start a
 * backup, list points, follow a job), not a data path: tens of requests a second is plenty, and a
 * runaway script should hit 429 before it runs up Lambda and DynamoDB bills.
 */
export const API_THROTTLING = { rateLimit: 50, burstLimit: 100 } as const;

export interface HttpApiProps {
  readonly handler: IFunction;
}

export class HttpApi extends Construct {
  readonly restApi: RestApi;
  readonly accessLogs: LogGroup;

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

    // The stack outputs the URL once, as ApiUrl; drop RestApi's own unnamed copy.
    this.restApi.node.tryRemoveChild('Endpoint');

    const integration = new LambdaIntegration(props.handler, {
      proxy: true,
      // The console's "Test" button is not how this API is exercised; fewer invoke permissions.
      allowTestInvoke: false,
    });
    this.restApi.root.addMethod('ANY', integration);
    this.restApi.root.addProxy({ defaultIntegration: integration, anyMethod: true });

    acknowledge(
      this.restApi,
      'AwsSolutions-APIG2',
      'Every request goes to one proxy function that validates path, query and body itself: the ' +
        'same handler serves local mode, where there is no API Gateway to validate for it.',
    );
    acknowledge(
      this.restApi,
      'AwsSolutions-COG4',
      'Callers authenticate with IAM (SigV4): the CLI and agents already hold AWS credentials, ' +
        'and there is no user pool to sign in to.',
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
