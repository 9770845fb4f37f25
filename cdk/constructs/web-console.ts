/**
 * The web console in AWS: the same static build that `stowage start` serves (console/, built by
 * `npm run build:console` into dist/console/), in a private S3 bucket behind CloudFront, plus a
 * `config.json` written at deploy time from the stack's own values (the API's URL, the region,
 * the Cognito ids). The console reads that file first: `"mode": "cloud"` makes it sign in with
 * Cognito and sign its API calls with SigV4 (console/src/cloud/); local mode answers
 * `{"mode": "local"}` instead, and the console uses the API token.
 *
 * The bucket is reachable only through the distribution (Origin Access Control: CloudFront signs
 * its reads, the bucket policy admits that distribution's reads and nothing else; every public
 * access blocked), over HTTPS only. Every answer carries the same strict headers as local mode's
 * (local/console-files.ts): a Content-Security-Policy with no inline code and calls only to
 * this origin, the API, Cognito's sign-in domain and Cognito Identity; HSTS, nosniff, no frames,
 * no referrer.
 *
 * The build is read at synth time: a missing dist/console/ fails the synth with the command
 * that makes it, rather than deploying a console that is not there.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Aws, Duration, RemovalPolicy } from 'aws-cdk-lib';
import {
  AllowedMethods,
  CachePolicy,
  Distribution,
  HeadersFrameOption,
  HeadersReferrerPolicy,
  HttpVersion,
  PriceClass,
  ResponseHeadersPolicy,
  ViewerProtocolPolicy,
} from 'aws-cdk-lib/aws-cloudfront';
import { S3BucketOrigin } from 'aws-cdk-lib/aws-cloudfront-origins';
import {
  BlockPublicAccess,
  Bucket,
  BucketEncryption,
  type IBucket,
  ObjectOwnership,
} from 'aws-cdk-lib/aws-s3';
import { BucketDeployment, CacheControl, Source } from 'aws-cdk-lib/aws-s3-deployment';
import { Construct } from 'constructs';
import { acknowledge, nagAttr } from '../nag';
import { REPO_ROOT } from '../project';

/** Where `npm run build:console` puts the build (console/vite.config.ts). */
export const CONSOLE_BUILD_DIR = join(REPO_ROOT, 'dist', 'console');

/** The runtime configuration file the console fetches from its own origin. */
export const CONSOLE_CONFIG_FILE = 'config.json';

/**
 * What config.json holds in AWS (console/src/cloud/config.ts reads it). Every value comes from
 * the stack at deploy time.
 */
export interface CloudConsoleConfig {
  readonly mode: 'cloud';
  readonly region: string;
  /** The API stage's URL, ending in `/`. */
  readonly apiUrl: string;
  readonly userPoolId: string;
  readonly userPoolClientId: string;
  readonly identityPoolId: string;
  /** https://<prefix>.auth.<region>.amazoncognito.com */
  readonly authDomain: string;
}

/**
 * The console's Content-Security-Policy: local mode's (scripts, styles and fonts from this
 * origin only, no inline code, no frames, no forms, no base), with `connect-src` widened to the
 * three other origins the cloud console calls.
 */
export function consoleContentSecurityPolicy(connect: readonly string[]): string {
  return [
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "font-src 'self'",
    `connect-src 'self' ${connect.join(' ')}`,
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join('; ');
}

export interface WebConsoleProps {
  /** The origins the console calls besides its own: the API, Cognito's domain, Cognito Identity. */
  readonly connectOrigins: readonly string[];
  /** The config.json the console reads (deploy-time values allowed). */
  readonly config: CloudConsoleConfig;
  /** Where S3 writes the console bucket's server access logs (prefix `console/`). */
  readonly accessLogs: IBucket;
  /** The build to deploy; CONSOLE_BUILD_DIR unless a test points elsewhere. */
  readonly buildDir?: string;
}

export class WebConsole extends Construct {
  readonly bucket: Bucket;
  readonly distribution: Distribution;
  readonly headers: ResponseHeadersPolicy;
  readonly deployment: BucketDeployment;

  constructor(scope: Construct, id: string, props: WebConsoleProps) {
    super(scope, id);
    const buildDir = props.buildDir ?? CONSOLE_BUILD_DIR;
    if (!existsSync(join(buildDir, 'index.html'))) {
      throw new Error(
        `the web console is not built (no ${join(buildDir, 'index.html')}): run \`npm run build:console\` before synth`,
      );
    }

    this.bucket = new Bucket(this, 'Files', {
      blockPublicAccess: BlockPublicAccess.BLOCK_ALL,
      enforceSSL: true,
      minimumTLSVersion: 1.2,
      encryption: BucketEncryption.S3_MANAGED,
      objectOwnership: ObjectOwnership.BUCKET_OWNER_ENFORCED,
      serverAccessLogsBucket: props.accessLogs,
      serverAccessLogsPrefix: 'console/',
      // Only the build lives here, and the deployment writes it again: nothing to keep.
      removalPolicy: RemovalPolicy.DESTROY,
      autoDeleteObjects: false,
    });

    this.headers = new ResponseHeadersPolicy(this, 'Headers', {
      comment: 'Stowage console: CSP, HSTS, nosniff, no frames, no referrer',
      securityHeadersBehavior: {
        contentSecurityPolicy: {
          contentSecurityPolicy: consoleContentSecurityPolicy(props.connectOrigins),
          override: true,
        },
        strictTransportSecurity: {
          accessControlMaxAge: Duration.days(730),
          includeSubdomains: true,
          override: true,
        },
        contentTypeOptions: { override: true },
        frameOptions: { frameOption: HeadersFrameOption.DENY, override: true },
        referrerPolicy: { referrerPolicy: HeadersReferrerPolicy.NO_REFERRER, override: true },
      },
    });

    this.distribution = new Distribution(this, 'Distribution', {
      comment: 'Stowage web console',
      defaultRootObject: 'index.html',
      defaultBehavior: {
        origin: S3BucketOrigin.withOriginAccessControl(this.bucket),
        viewerProtocolPolicy: ViewerProtocolPolicy.HTTPS_ONLY,
        allowedMethods: AllowedMethods.ALLOW_GET_HEAD,
        cachePolicy: CachePolicy.CACHING_OPTIMIZED,
        responseHeadersPolicy: this.headers,
        compress: true,
      },
      httpVersion: HttpVersion.HTTP2_AND_3,
      // North America and Europe edges: an operators' console, not a public site.
      priceClass: PriceClass.PRICE_CLASS_100,
    });
    acknowledge(
      this.distribution,
      'AwsSolutions-CFR1',
      'Operators may work from anywhere; the console holds no data, and the API behind it ' +
        'answers only signed requests of the Cognito roles.',
    );
    acknowledge(
      this.distribution,
      'AwsSolutions-CFR2',
      'The distribution serves a few static files; every call that does anything goes to API ' +
        'Gateway, which refuses unsigned requests and is throttled. A web ACL would cost more ' +
        'than what it could protect here.',
    );
    acknowledge(
      this.distribution,
      'AwsSolutions-CFR3',
      "The files served are the public build of the console; who did what is in API Gateway's " +
        "access logs, CloudTrail and the console bucket's S3 access logs. CloudFront standard " +
        'logs would need a bucket with ACLs enabled.',
    );
    acknowledge(
      this.distribution,
      'AwsSolutions-CFR4',
      'The default *.cloudfront.net certificate is used (no custom domain), and with it ' +
        'CloudFront fixes the viewer security policy; current browsers negotiate TLS 1.2 or 1.3. A custom domain with its ACM certificate would allow TLSv1.2_2021.',
    );

    this.deployment = new BucketDeployment(this, 'Deploy', {
      destinationBucket: this.bucket,
      sources: [Source.asset(buildDir), Source.jsonData(CONSOLE_CONFIG_FILE, props.config)],
      // The browser revalidates every file (ETag): a deploy is seen at the next load, and the
      // hashed assets cost a 304 only.
      cacheControl: [CacheControl.fromString('no-cache')],
      prune: true,
      distribution: this.distribution,
      distributionPaths: ['/*'],
      memoryLimit: 256,
    });
    // The deployment's function and role are CDK's (one per stack, at the stack's root): its
    // findings are acknowledged on it one by one, so anything new still fails the synth.
    const role = this.deployment.handlerRole;
    const why = {
      assets:
        "It reads the build's zip from the CDK bootstrap asset bucket (read actions only; " +
        'object names there are content hashes).',
      files:
        'It replaces the build in the console bucket whole (prune: files gone from the build ' +
        'are deleted); the bucket holds nothing else.',
      invalidate:
        "It invalidates the distribution's cache after a deploy; CDK grants the two " +
        'invalidation actions without naming the distribution.',
    };
    const findings: Array<[string, string]> = [
      ['Action::s3:GetBucket*', why.assets],
      ['Action::s3:GetObject*', why.assets],
      ['Action::s3:List*', why.assets],
      [
        'Resource::arn:<AWS::Partition>:s3:::cdk-hnb659fds-assets-<AWS::AccountId>-<AWS::Region>/*',
        why.assets,
      ],
      ['Action::s3:Abort*', why.files],
      ['Action::s3:DeleteObject*', why.files],
      [`Resource::${nagAttr(this.bucket, 'Arn')}/*`, why.files],
      ['Resource::*', why.invalidate],
    ];
    for (const [finding, reason] of findings) {
      acknowledge(role, 'AwsSolutions-IAM5', reason, finding);
    }
    acknowledge(
      role,
      'AwsSolutions-IAM4',
      "CDK's BucketDeployment function writes its logs with the AWS Lambda basic execution " +
        'policy.',
      'Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole',
    );
    acknowledge(
      role.node.scope!,
      'AwsSolutions-L1',
      "CDK's BucketDeployment function runs on the Python runtime that aws-cdk-lib pins for it " +
        '(with the AWS CLI layer it ships).',
    );
  }

  /** https://<distribution domain>: the console's origin (CORS, Cognito's callback). */
  get origin(): string {
    return `https://${this.distribution.distributionDomainName}`;
  }
}

/** The origin of Cognito Identity in the stack's region. */
export function cognitoIdentityOrigin(): string {
  return `https://cognito-identity.${Aws.REGION}.${Aws.URL_SUFFIX}`;
}
