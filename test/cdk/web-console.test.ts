/**
 * The web console in AWS (cdk/constructs/web-console.ts, console-sign-in.ts and the API's CORS),
 * asserted on what matters: a private bucket only CloudFront reads, HTTPS only with strict
 * headers, the build and a config.json of the stack's own values deployed, a user pool nobody
 * signs up to, with MFA, whose groups alone lead to the API's roles, and CORS for the console's
 * origin only. The build is read at synth (./console-build.ts makes it if it is missing).
 */
import './console-build';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { App, Stack } from 'aws-cdk-lib';
import { Bucket } from 'aws-cdk-lib/aws-s3';
import { Match, Template } from 'aws-cdk-lib/assertions';
import { CfnElement } from 'aws-cdk-lib';
import type { IConstruct } from 'constructs';
import { beforeAll, describe, expect, it } from 'vitest';
import { API_CORS } from '../../cdk/constructs/api';
import { CONSOLE_GROUPS, CONSOLE_PASSWORD_POLICY } from '../../cdk/constructs/console-sign-in';
import { CONSOLE_BUILD_DIR, WebConsole } from '../../cdk/constructs/web-console';
import { REPO_ROOT } from '../../cdk/project';
import { SITES_CONTEXT_KEY, StowageStack } from '../../cdk/stack';

type Json = Record<string, unknown>;

function makeApp(outdir?: string): App {
  const cdkJson = JSON.parse(readFileSync(join(REPO_ROOT, 'cdk.json'), 'utf8')) as {
    context: Json;
  };
  return new App({
    ...(outdir ? { outdir } : {}),
    context: {
      ...cdkJson.context,
      'aws:cdk:bundling-stacks': [],
      [SITES_CONTEXT_KEY]: ['main'],
    },
  });
}

let stack: StowageStack;
let template: Template;
let assembly: string;

const id = (construct: IConstruct): string => {
  const element = construct instanceof CfnElement ? construct : construct.node.defaultChild;
  return stack.resolve((element as CfnElement).logicalId) as string;
};
const only = (type: string): Json => {
  const found = Object.values(template.findResources(type));
  expect(found, type).toHaveLength(1);
  return found[0]!.Properties as Json;
};
const text = (value: unknown) => JSON.stringify(value);
/** How the console's origin appears in the template: https:// + the distribution's domain. */
const consoleOrigin = (before = '', after = '') => {
  const domain = { 'Fn::GetAtt': [id(stack.webConsole.distribution), 'DomainName'] };
  return { 'Fn::Join': ['', [`${before}https://`, domain, ...(after ? [after] : [])]] };
};

beforeAll(() => {
  assembly = mkdtempSync(join(tmpdir(), 'stowage-console-cdk-'));
  const app = makeApp(assembly);
  stack = new StowageStack(app, 'Stowage');
  template = Template.fromStack(stack);
  app.synth();
  return () => rmSync(assembly, { recursive: true, force: true });
});

describe('the console files', () => {
  it('are in a private bucket that only the distribution reads, through Origin Access Control', () => {
    const bucket = id(stack.webConsole.bucket);
    template.hasResourceProperties('AWS::S3::Bucket', {
      PublicAccessBlockConfiguration: {
        BlockPublicAcls: true,
        BlockPublicPolicy: true,
        IgnorePublicAcls: true,
        RestrictPublicBuckets: true,
      },
      LoggingConfiguration: { LogFilePrefix: 'console/' },
      OwnershipControls: { Rules: [{ ObjectOwnership: 'BucketOwnerEnforced' }] },
    });
    const policy = Object.values(template.findResources('AWS::S3::BucketPolicy')).find(
      (p) => text((p.Properties as Json).Bucket) === text({ Ref: bucket }),
    )!.Properties as { PolicyDocument: { Statement: Json[] } };
    const allows = policy.PolicyDocument.Statement.filter((s) => s.Effect === 'Allow');
    expect(allows).toEqual([
      expect.objectContaining({
        Action: 's3:GetObject',
        Principal: { Service: 'cloudfront.amazonaws.com' },
        Condition: {
          StringEquals: {
            'AWS:SourceArn': expect.objectContaining({
              'Fn::Join': expect.arrayContaining([
                expect.arrayContaining([{ Ref: id(stack.webConsole.distribution) }]),
              ]),
            }),
          },
        },
      }),
    ]);
    // No HTTP: the bucket refuses any request without TLS.
    expect(text(policy.PolicyDocument.Statement)).toContain('aws:SecureTransport');
    template.hasResourceProperties('AWS::CloudFront::OriginAccessControl', {
      OriginAccessControlConfig: {
        OriginAccessControlOriginType: 's3',
        SigningBehavior: 'always',
        SigningProtocol: 'sigv4',
      },
    });
  });

  it('are served over HTTPS only, index.html at the root, with the strict headers on every answer', () => {
    const config = only('AWS::CloudFront::Distribution').DistributionConfig as Json;
    expect(config).toMatchObject({
      DefaultRootObject: 'index.html',
      DefaultCacheBehavior: {
        ViewerProtocolPolicy: 'https-only',
        AllowedMethods: ['GET', 'HEAD'],
        ResponseHeadersPolicyId: { Ref: id(stack.webConsole.headers) },
      },
    });
    const [origin] = config.Origins as Json[];
    expect(origin!.OriginAccessControlId).toBeDefined();
    expect(origin!.S3OriginConfig).toEqual({ OriginAccessIdentity: '' });

    const headers = (
      only('AWS::CloudFront::ResponseHeadersPolicy').ResponseHeadersPolicyConfig as Json
    ).SecurityHeadersConfig as Json;
    expect(headers).toMatchObject({
      ContentTypeOptions: { Override: true },
      FrameOptions: { FrameOption: 'DENY', Override: true },
      ReferrerPolicy: { ReferrerPolicy: 'no-referrer', Override: true },
      StrictTransportSecurity: { AccessControlMaxAgeSec: 730 * 86400, IncludeSubdomains: true },
    });
    const csp = text((headers.ContentSecurityPolicy as Json).ContentSecurityPolicy);
    for (const directive of [
      "default-src 'none'",
      "script-src 'self'",
      "style-src 'self'",
      "frame-ancestors 'none'",
      "connect-src 'self' https://",
    ]) {
      expect(csp).toContain(directive);
    }
    expect(csp).not.toContain('unsafe');
    // connect-src names the API, Cognito's sign-in domain and Cognito Identity, nothing else.
    expect(csp).toContain(id(stack.httpApi.restApi));
    expect(csp).toContain('.execute-api.');
    expect(csp).toContain(id(stack.consoleSignIn.domain));
    expect(csp).toContain('https://cognito-identity.');
    expect(csp).not.toMatch(/connect-src[^;]*\*/);
  });

  it("deploy the build and a config.json of the stack's own values, then invalidate the cache", () => {
    const deployment = only('Custom::CDKBucketDeployment');
    expect(deployment).toMatchObject({
      DestinationBucketName: { Ref: id(stack.webConsole.bucket) },
      Prune: true,
      DistributionId: { Ref: id(stack.webConsole.distribution) },
      DistributionPaths: ['/*'],
      SystemMetadata: { 'cache-control': 'no-cache' },
    });
    expect(deployment.SourceObjectKeys).toHaveLength(2);

    // The staged sources: the Vite build as it is, and config.json with deploy-time markers.
    const dirs = readdirSync(assembly).filter((d) => d.startsWith('asset.'));
    const build = dirs.find((d) => existsSync(join(assembly, d, 'index.html')))!;
    expect(readdirSync(join(assembly, build)).sort()).toEqual(
      readdirSync(CONSOLE_BUILD_DIR).sort(),
    );
    const configDir = dirs.find((d) => existsSync(join(assembly, d, 'config.json')))!;
    const config = JSON.parse(
      readFileSync(join(assembly, configDir, 'config.json'), 'utf8'),
    ) as Record<string, string>;
    expect(Object.keys(config).sort()).toEqual(
      [
        'mode',
        'region',
        'apiUrl',
        'userPoolId',
        'userPoolClientId',
        'identityPoolId',
        'authDomain',
      ].sort(),
    );
    expect(config.mode).toBe('cloud');
    // Each marker is replaced at deploy time by the value it stands for.
    const markers = (deployment.SourceMarkers as Json[]).find((m) => Object.keys(m).length)!;
    const valueOf = (field: string) =>
      config[field]!.replace(/<<marker:0xbaba:(\d+)>>/g, (m) => text(markers[m]));
    expect(valueOf('region')).toBe(text({ Ref: 'AWS::Region' }));
    expect(valueOf('apiUrl')).toContain(text({ Ref: id(stack.httpApi.restApi) }));
    expect(valueOf('apiUrl')).toContain(text({ Ref: id(stack.httpApi.restApi.deploymentStage) }));
    expect(valueOf('userPoolId')).toBe(text({ Ref: id(stack.consoleSignIn.userPool) }));
    expect(valueOf('userPoolClientId')).toBe(text({ Ref: id(stack.consoleSignIn.client) }));
    expect(valueOf('identityPoolId')).toBe(text({ Ref: id(stack.consoleSignIn.identityPool) }));
    expect(valueOf('authDomain')).toContain(text({ Ref: id(stack.consoleSignIn.domain) }));
  });

  it('refuses to synthesize without a build, naming the command that makes it', () => {
    const empty = mkdtempSync(join(tmpdir(), 'stowage-no-console-'));
    try {
      const bare = new Stack(makeApp(), 'Bare');
      expect(
        () =>
          new WebConsole(bare, 'Console', {
            connectOrigins: [],
            config: {
              mode: 'cloud',
              region: 'eu-west-1',
              apiUrl: 'https://api.example/prod/',
              userPoolId: 'p',
              userPoolClientId: 'c',
              identityPoolId: 'i',
              authDomain: 'https://d.example',
            },
            accessLogs: new Bucket(bare, 'Logs'),
            buildDir: empty,
          }),
      ).toThrow(/npm run build:console/);
    } finally {
      rmSync(empty, { recursive: true, force: true });
    }
  });
});

describe('console sign-in', () => {
  it('is a user pool nobody signs up to, with strong passwords, TOTP MFA required and threat protection', () => {
    template.hasResourceProperties('AWS::Cognito::UserPool', {
      AdminCreateUserConfig: { AllowAdminCreateUserOnly: true },
      Policies: {
        PasswordPolicy: {
          MinimumLength: CONSOLE_PASSWORD_POLICY.minLength,
          RequireLowercase: true,
          RequireUppercase: true,
          RequireNumbers: true,
          RequireSymbols: true,
          TemporaryPasswordValidityDays: 3,
        },
      },
      MfaConfiguration: 'ON',
      EnabledMfas: ['SOFTWARE_TOKEN_MFA'],
      UserPoolTier: 'PLUS',
      UserPoolAddOns: { AdvancedSecurityMode: 'ENFORCED' },
      DeletionProtection: 'ACTIVE',
    });
    template.hasResource('AWS::Cognito::UserPool', { DeletionPolicy: 'Retain' });
  });

  it('has a public app client for the code flow only, sending people back to the console', () => {
    const client = only('AWS::Cognito::UserPoolClient');
    expect(client).toMatchObject({
      GenerateSecret: false,
      AllowedOAuthFlows: ['code'],
      AllowedOAuthFlowsUserPoolClient: true,
      ExplicitAuthFlows: ['ALLOW_REFRESH_TOKEN_AUTH'],
      SupportedIdentityProviders: ['COGNITO'],
      PreventUserExistenceErrors: 'ENABLED',
      EnableTokenRevocation: true,
    });
    expect((client.AllowedOAuthScopes as string[]).sort()).toEqual(['email', 'openid', 'profile']);
    const home = consoleOrigin('', '/');
    expect(text(client.CallbackURLs)).toBe(text([home]));
    expect(text(client.LogoutURLs)).toBe(text([home]));
  });

  it("trades only the client's tokens at the identity pool, for the role of the user's group or nothing", () => {
    const pool = only('AWS::Cognito::IdentityPool');
    expect(pool).toMatchObject({
      AllowUnauthenticatedIdentities: false,
      AllowClassicFlow: false,
      CognitoIdentityProviders: [
        {
          ClientId: { Ref: id(stack.consoleSignIn.client) },
          ServerSideTokenCheck: true,
        },
      ],
    });
    const attachment = only('AWS::Cognito::IdentityPoolRoleAttachment');
    const operator = id(stack.consoleSignIn.operatorRole);
    const viewer = id(stack.consoleSignIn.viewerRole);
    expect(attachment.Roles).toEqual({ authenticated: { 'Fn::GetAtt': [operator, 'Arn'] } });
    // Rules, not Token: Deny then covers "no rule matched", i.e. someone in neither group.
    expect(Object.values(attachment.RoleMappings as Json)).toEqual([
      {
        IdentityProvider: expect.anything(),
        Type: 'Rules',
        AmbiguousRoleResolution: 'Deny',
        RulesConfiguration: {
          Rules: [
            {
              Claim: 'cognito:groups',
              MatchType: 'Contains',
              Value: 'operators',
              RoleARN: { 'Fn::GetAtt': [operator, 'Arn'] },
            },
            {
              Claim: 'cognito:groups',
              MatchType: 'Contains',
              Value: 'viewers',
              RoleARN: { 'Fn::GetAtt': [viewer, 'Arn'] },
            },
          ],
        },
      },
    ]);

    const groups = Object.values(template.findResources('AWS::Cognito::UserPoolGroup')).map(
      (g) => g.Properties as Json,
    );
    expect(groups.map((g) => [g.GroupName, g.Precedence, g.RoleArn])).toEqual(
      expect.arrayContaining([
        ['operators', CONSOLE_GROUPS.operators.precedence, { 'Fn::GetAtt': [operator, 'Arn'] }],
        ['viewers', CONSOLE_GROUPS.viewers.precedence, { 'Fn::GetAtt': [viewer, 'Arn'] }],
      ]),
    );
    expect(groups).toHaveLength(2);
  });

  it("gives the operator role the API's operator policy and the viewer role the viewer policy, to this pool's signed-in identities only", () => {
    const roles = template.toJSON().Resources as Record<string, { Properties: Json }>;
    for (const [role, policy] of [
      [stack.consoleSignIn.operatorRole, stack.httpApi.operatorPolicy],
      [stack.consoleSignIn.viewerRole, stack.httpApi.viewerPolicy],
    ] as const) {
      const props = roles[id(role)]!.Properties;
      expect(props.ManagedPolicyArns).toEqual([{ Ref: id(policy) }]);
      expect(props.Policies).toBeUndefined();
      expect(props.AssumeRolePolicyDocument).toEqual({
        Version: '2012-10-17',
        Statement: [
          {
            Effect: 'Allow',
            Action: 'sts:AssumeRoleWithWebIdentity',
            Principal: { Federated: 'cognito-identity.amazonaws.com' },
            Condition: {
              StringEquals: {
                'cognito-identity.amazonaws.com:aud': { Ref: id(stack.consoleSignIn.identityPool) },
              },
              'ForAnyValue:StringLike': { 'cognito-identity.amazonaws.com:amr': 'authenticated' },
            },
          },
        ],
      });
    }
    // Nothing else in the template may take them.
    const attached = Object.values(roles).filter((r) =>
      String(text(r.Properties?.ManagedPolicyArns)).includes(id(stack.httpApi.operatorPolicy)),
    );
    expect(attached).toHaveLength(1);
  });
});

describe("the API's CORS", () => {
  const preflights = () =>
    Object.values(template.findResources('AWS::ApiGateway::Method'))
      .map((m) => m.Properties as Json)
      .filter((m) => m.HttpMethod === 'OPTIONS');

  it("answers every resource's preflight itself, for the console's origin only", () => {
    const resources = Object.keys(template.findResources('AWS::ApiGateway::Resource')).length;
    expect(preflights()).toHaveLength(resources + 1);
    for (const method of preflights()) {
      expect(method).toMatchObject({ AuthorizationType: 'NONE', Integration: { Type: 'MOCK' } });
      const params = ((method.Integration as Json).IntegrationResponses as Json[])[0]!
        .ResponseParameters as Json;
      expect(params['method.response.header.Access-Control-Allow-Origin']).toEqual(
        consoleOrigin("'", "'"),
      );
      expect(params['method.response.header.Access-Control-Allow-Headers']).toBe(
        `'${API_CORS.allowHeaders.join(',')}'`,
      );
      expect(params['method.response.header.Access-Control-Allow-Methods']).toBe(
        `'${API_CORS.allowMethods.join(',')}'`,
      );
      expect(params['method.response.header.Access-Control-Allow-Credentials']).toBeUndefined();
    }
    expect(text(template.toJSON())).not.toContain('Access-Control-Allow-Origin":"\'*\'');
  });

  it("lets the console read API Gateway's own refusals, and has the function name the origin", () => {
    for (const type of ['DEFAULT_4XX', 'DEFAULT_5XX']) {
      template.hasResourceProperties('AWS::ApiGateway::GatewayResponse', {
        ResponseType: type,
        ResponseParameters: {
          'gatewayresponse.header.Access-Control-Allow-Origin': consoleOrigin("'", "'"),
        },
      });
    }
    template.hasResourceProperties('AWS::Lambda::Function', {
      Description: 'Stowage: the HTTP API behind API Gateway',
      Environment: { Variables: Match.objectLike({ CONSOLE_ORIGIN: consoleOrigin() }) },
    });
  });
});

describe('the template', () => {
  it('has no dependency cycle, so CloudFormation can order it (the console, its sign-in and the API name each other)', () => {
    const resources = template.toJSON().Resources as Record<string, Json>;
    const edges = new Map<string, Set<string>>();
    const collect = (value: unknown, into: Set<string>): void => {
      if (Array.isArray(value)) for (const v of value) collect(v, into);
      else if (value && typeof value === 'object') {
        for (const [key, v] of Object.entries(value)) {
          if (key === 'Ref' && typeof v === 'string' && v in resources) into.add(v);
          else if (key === 'Fn::GetAtt') into.add((v as string[])[0]!);
          else collect(v, into);
        }
      }
    };
    for (const [name, resource] of Object.entries(resources)) {
      const into = new Set<string>([resource.DependsOn ?? []].flat() as string[]);
      collect(resource.Properties, into);
      edges.set(name, into);
    }
    const state = new Map<string, 'open' | 'done'>();
    const visit = (name: string, path: string[]): void => {
      state.set(name, 'open');
      for (const next of edges.get(name) ?? []) {
        if (state.get(next) === 'open') throw new Error(`cycle: ${[...path, next].join(' -> ')}`);
        if (!state.has(next)) visit(next, [...path, next]);
      }
      state.set(name, 'done');
    };
    for (const name of edges.keys()) if (!state.has(name)) visit(name, [name]);
    expect(state.size).toBe(Object.keys(resources).length);
  });
});
