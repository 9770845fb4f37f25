/**
 * AWS credentials from a Cognito identity pool for a signed-in person: GetId, then
 * GetCredentialsForIdentity, both with the user pool's ID token as the login (the enhanced
 * flow: the pool picks the role, here from the token's `cognito:preferred_role`, the person's
 * group). Two unsigned JSON calls to cognito-identity.<region>.amazonaws.com, written out rather
 * than pulling an AWS SDK client into the page (the console imports no @aws-sdk package).
 */
import type { AwsCredentials } from './sigv4';

export interface IdentityPoolLogin {
  region: string;
  identityPoolId: string;
  userPoolId: string;
  idToken: string;
}

/** An error answered by Cognito Identity: its type (e.g. NotAuthorizedException) and message. */
export class IdentityError extends Error {
  constructor(
    readonly type: string,
    message: string,
  ) {
    super(message);
    this.name = 'IdentityError';
  }
}

async function call<T>(region: string, action: string, body: unknown): Promise<T> {
  const res = await fetch(`https://cognito-identity.${region}.amazonaws.com/`, {
    method: 'POST',
    headers: {
      'content-type': 'application/x-amz-json-1.1',
      'x-amz-target': `AWSCognitoIdentityService.${action}`,
    },
    body: JSON.stringify(body),
    credentials: 'omit',
    cache: 'no-store',
  });
  const data = (await res.json().catch(() => ({}))) as Record<string, unknown>;
  if (!res.ok) {
    const type = String(data.__type ?? `HTTP${res.status}`).replace(/^.*#/, '');
    throw new IdentityError(type, String(data.message ?? data.Message ?? type));
  }
  return data as T;
}

/** `identityId` is this browser's identity from an earlier call, if it kept one. */
export async function credentialsForLogin(
  login: IdentityPoolLogin,
  identityId?: string,
): Promise<{ identityId: string; credentials: AwsCredentials }> {
  const logins = {
    [`cognito-idp.${login.region}.amazonaws.com/${login.userPoolId}`]: login.idToken,
  };
  const id =
    identityId ??
    (
      await call<{ IdentityId: string }>(login.region, 'GetId', {
        IdentityPoolId: login.identityPoolId,
        Logins: logins,
      })
    ).IdentityId;
  const answer = await call<{
    IdentityId: string;
    Credentials: {
      AccessKeyId: string;
      SecretKey: string;
      SessionToken: string;
      Expiration: number;
    };
  }>(login.region, 'GetCredentialsForIdentity', { IdentityId: id, Logins: logins });
  const c = answer.Credentials;
  return {
    identityId: answer.IdentityId,
    credentials: {
      accessKeyId: c.AccessKeyId,
      secretAccessKey: c.SecretKey,
      sessionToken: c.SessionToken,
      // Seconds since the epoch on the wire (the JSON protocol's timestamp).
      expiration: new Date(c.Expiration * 1000),
    },
  };
}
