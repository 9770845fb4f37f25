/**
 * Who may sign in to the web console in AWS, and with which AWS permissions.
 *
 * A Cognito user pool holds the people (an administrator creates them: no self sign-up), who sign
 * in on Cognito's own hosted pages (the authorization code flow with PKCE: the password and the
 * TOTP code are typed into Cognito, never into the console). The console trades the ID token at a
 * Cognito identity pool for short-lived AWS credentials and signs every API call with them
 * (SigV4), so API Gateway keeps its one way in, IAM auth, for the CLI and the console alike.
 *
 * Which role a person gets is the group they are in, read from the ID token's `cognito:groups`
 * by the identity pool's rules: `operators` get the operator role (the API's OperatorPolicy,
 * every method; it is also the identity pool's authenticated role), `viewers` the viewer role
 * (ViewerPolicy, GET only); operators first, for someone in both. Someone in neither group gets
 * no credentials at all: with rules, AmbiguousRoleResolution `Deny` applies when no rule matches
 * (with the Token type it only covers several roles without a preferred one). Being in the pool
 * is not enough to touch backups.
 *
 * MFA is required, with an authenticator app (TOTP) only: the console can restore in place over
 * running workloads, delete recovery points and prune, so a phished password alone must not be
 * enough; SMS is left out (SIM swaps, and it needs an SNS role and spending limits). The pool is
 * on the Plus feature plan with threat protection enforced (compromised-credential and adaptive
 * checks block risky sign-ins): it costs per monthly active user, and a backup console has a
 * handful.
 */
import { Aws, Duration, RemovalPolicy, Stack } from 'aws-cdk-lib';
import {
  AccountRecovery,
  CfnUserPoolGroup,
  FeaturePlan,
  Mfa,
  OAuthScope,
  StandardThreatProtectionMode,
  UserPool,
  UserPoolClient,
  UserPoolClientIdentityProvider,
  type UserPoolDomain,
} from 'aws-cdk-lib/aws-cognito';
import { CfnIdentityPool, CfnIdentityPoolRoleAttachment } from 'aws-cdk-lib/aws-cognito';
import { FederatedPrincipal, type IManagedPolicy, Role } from 'aws-cdk-lib/aws-iam';
import { Construct } from 'constructs';

/** The user pool groups that map to roles; the lower precedence wins for someone in both. */
export const CONSOLE_GROUPS = {
  operators: { precedence: 1, description: 'Every method of the Stowage API' },
  viewers: { precedence: 2, description: 'The read-only GET methods of the Stowage API' },
} as const;

/**
 * Password rules: 14 characters of four kinds (NIST 800-63B favours length; cdk-nag asks for the
 * kinds), and a temporary password (an administrator's invitation) is good for 3 days.
 */
export const CONSOLE_PASSWORD_POLICY = {
  minLength: 14,
  requireLowercase: true,
  requireUppercase: true,
  requireDigits: true,
  requireSymbols: true,
  tempPasswordValidity: Duration.days(3),
} as const;

/**
 * Token lifetimes: an ID token (and so a set of identity-pool credentials) for an hour; the
 * console renews it with the refresh token, which lasts a working day, then asks for a sign-in.
 */
export const CONSOLE_TOKEN_VALIDITY = {
  idToken: Duration.hours(1),
  accessToken: Duration.hours(1),
  refreshToken: Duration.hours(12),
} as const;

export interface ConsoleSignInProps {
  /** The console's own origin (https://<distribution domain>), where Cognito sends people back. */
  readonly consoleOrigin: string;
  readonly operatorPolicy: IManagedPolicy;
  readonly viewerPolicy: IManagedPolicy;
}

export class ConsoleSignIn extends Construct {
  readonly userPool: UserPool;
  readonly client: UserPoolClient;
  readonly domain: UserPoolDomain;
  readonly identityPool: CfnIdentityPool;
  readonly operatorRole: Role;
  readonly viewerRole: Role;

  constructor(scope: Construct, id: string, props: ConsoleSignInProps) {
    super(scope, id);

    this.userPool = new UserPool(this, 'UserPool', {
      selfSignUpEnabled: false,
      signInAliases: { username: true, email: true },
      signInCaseSensitive: false,
      autoVerify: { email: true },
      standardAttributes: { email: { required: true, mutable: true } },
      passwordPolicy: CONSOLE_PASSWORD_POLICY,
      mfa: Mfa.REQUIRED,
      mfaSecondFactor: { otp: true, sms: false },
      accountRecovery: AccountRecovery.EMAIL_ONLY,
      featurePlan: FeaturePlan.PLUS,
      standardThreatProtectionMode: StandardThreatProtectionMode.FULL_FUNCTION,
      deletionProtection: true,
      // The people who may restore over production are not re-created by a redeploy.
      removalPolicy: RemovalPolicy.RETAIN,
    });

    // Cognito's hosted sign-in pages at https://<prefix>.auth.<region>.amazoncognito.com; the
    // prefix is global per region, so it carries the stack's name and the account.
    this.domain = this.userPool.addDomain('Domain', {
      cognitoDomain: {
        domainPrefix: `${Stack.of(this).stackName.toLowerCase()}-console-${Aws.ACCOUNT_ID}`,
      },
    });

    const home = `${props.consoleOrigin}/`;
    this.client = this.userPool.addClient('Console', {
      // A browser app holds no secret: the code flow is protected by PKCE instead.
      generateSecret: false,
      // Only refresh-token renewals beside the hosted pages: no password ever reaches the API of
      // the pool from the console (no USER_PASSWORD_AUTH, no SRP from the page).
      authFlows: { userSrp: false },
      oAuth: {
        flows: { authorizationCodeGrant: true },
        scopes: [OAuthScope.OPENID, OAuthScope.EMAIL, OAuthScope.PROFILE],
        callbackUrls: [home],
        logoutUrls: [home],
      },
      supportedIdentityProviders: [UserPoolClientIdentityProvider.COGNITO],
      preventUserExistenceErrors: true,
      enableTokenRevocation: true,
      idTokenValidity: CONSOLE_TOKEN_VALIDITY.idToken,
      accessTokenValidity: CONSOLE_TOKEN_VALIDITY.accessToken,
      refreshTokenValidity: CONSOLE_TOKEN_VALIDITY.refreshToken,
    });

    this.identityPool = new CfnIdentityPool(this, 'IdentityPool', {
      allowUnauthenticatedIdentities: false,
      // The basic (classic) flow lets a caller pick any role the pool may hand out; off.
      allowClassicFlow: false,
      cognitoIdentityProviders: [
        {
          clientId: this.client.userPoolClientId,
          providerName: this.userPool.userPoolProviderName,
          // Cognito Identity checks with the user pool that the token was not revoked.
          serverSideTokenCheck: true,
        },
      ],
    });

    // Only this identity pool's authenticated identities may take the roles.
    const signedIn = () =>
      new FederatedPrincipal(
        'cognito-identity.amazonaws.com',
        {
          StringEquals: { 'cognito-identity.amazonaws.com:aud': this.identityPool.ref },
          'ForAnyValue:StringLike': { 'cognito-identity.amazonaws.com:amr': 'authenticated' },
        },
        'sts:AssumeRoleWithWebIdentity',
      );
    this.operatorRole = new Role(this, 'OperatorRole', {
      description: 'Stowage console: people in the operators group (every API method)',
      assumedBy: signedIn(),
      managedPolicies: [props.operatorPolicy],
      maxSessionDuration: Duration.hours(1),
    });
    this.viewerRole = new Role(this, 'ViewerRole', {
      description: 'Stowage console: people in the viewers group (GET methods only)',
      assumedBy: signedIn(),
      managedPolicies: [props.viewerPolicy],
      maxSessionDuration: Duration.hours(1),
    });

    const roles = { operators: this.operatorRole, viewers: this.viewerRole };
    for (const [name, { precedence, description }] of Object.entries(CONSOLE_GROUPS)) {
      new CfnUserPoolGroup(this, `Group-${name}`, {
        userPoolId: this.userPool.userPoolId,
        groupName: name,
        description,
        precedence,
        roleArn: roles[name as keyof typeof roles].roleArn,
      });
    }

    new CfnIdentityPoolRoleAttachment(this, 'Roles', {
      identityPoolId: this.identityPool.ref,
      roles: { authenticated: this.operatorRole.roleArn },
      roleMappings: {
        console: {
          identityProvider: `${this.userPool.userPoolProviderName}:${this.client.userPoolClientId}`,
          type: 'Rules',
          // No rule matched (the person is in neither group): no credentials.
          ambiguousRoleResolution: 'Deny',
          rulesConfiguration: {
            // The first rule that matches wins: operators before viewers.
            rules: Object.keys(CONSOLE_GROUPS).map((group) => ({
              claim: 'cognito:groups',
              matchType: 'Contains',
              value: group,
              roleArn: roles[group as keyof typeof roles].roleArn,
            })),
          },
        },
      },
    });
  }

  /** https://<prefix>.auth.<region>.amazoncognito.com: Cognito's hosted sign-in pages. */
  get authDomainUrl(): string {
    return this.domain.baseUrl();
  }
}
