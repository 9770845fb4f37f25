/**
 * The console's sign-in in AWS (loaded only when /config.json says `"mode": "cloud"`).
 *
 * 1. Sign-in is Cognito's hosted pages, through oidc-client-ts: the authorization code flow with
 *    PKCE. The page sends the browser to https://<domain>/oauth2/authorize; the person types the
 *    password and the authenticator code there (Cognito also asks for a new password and for
 *    the authenticator's set-up on a first sign-in); Cognito sends the browser back to the
 *    console's origin with `?code=...&state=...`, which the page trades at /oauth2/token for
 *    the ID, access and refresh tokens. The tokens are kept in sessionStorage (this tab only).
 * 2. The ID token is traded at the identity pool for AWS credentials of the role of the
 *    person's group (identity.ts); they last an hour and are fetched again five minutes before
 *    they expire, after renewing the ID token with the refresh token if it has expired.
 * 3. Every API call is signed with them (sigv4.ts) and sent to API Gateway's URL.
 *
 * No Cognito secret exists (a browser app cannot keep one), and no password passes through the
 * console's code.
 */
import { type User, UserManager, WebStorageStateStore } from 'oidc-client-ts';
import type { Transport } from '../api';
import type { CloudConfig } from './config';
import { credentialsForLogin, IdentityError } from './identity';
import { type AwsCredentials, signRequest } from './sigv4';

/** Credentials are fetched again when less than this is left of them. */
const CREDENTIALS_MARGIN_MS = 5 * 60_000;
/** An ID token with less than this left is renewed before it is traded. */
const TOKEN_MARGIN_S = 60;
const IDENTITY_KEY = 'stowage.identityId';

/** A refusal before the request was sent: not signed in, or no role for this person. */
export class SignInError extends Error {
  constructor(
    readonly reason: 'signed-out' | 'no-role' | 'identity',
    message: string,
  ) {
    super(message);
    this.name = 'SignInError';
  }
}

export class CloudSession {
  private readonly users: UserManager;
  private current: User | null = null;
  private credentials: AwsCredentials | undefined;
  private pending: Promise<AwsCredentials> | undefined;

  constructor(readonly config: CloudConfig) {
    const issuer = `https://cognito-idp.${config.region}.amazonaws.com/${config.userPoolId}`;
    this.users = new UserManager({
      authority: issuer,
      // Cognito's endpoints, given rather than discovered: one request fewer, and the page
      // talks to nothing the CSP does not name.
      metadata: {
        issuer,
        authorization_endpoint: `${config.authDomain}/oauth2/authorize`,
        token_endpoint: `${config.authDomain}/oauth2/token`,
        revocation_endpoint: `${config.authDomain}/oauth2/revoke`,
      },
      client_id: config.userPoolClientId,
      redirect_uri: `${location.origin}/`,
      response_type: 'code',
      scope: 'openid email profile',
      loadUserInfo: false,
      automaticSilentRenew: false,
      userStore: new WebStorageStateStore({ store: sessionStorage }),
      stateStore: new WebStorageStateStore({ store: sessionStorage }),
    });
  }

  /**
   * Finishes a sign-in when this page load is Cognito sending the browser back (`?code=` and
   * `state=` in the query), then puts the address back to the page the sign-in started from.
   * Loads a sign-in kept in this tab otherwise.
   */
  async start(): Promise<void> {
    const query = new URLSearchParams(location.search);
    if (query.has('state') && (query.has('code') || query.has('error'))) {
      try {
        const user = await this.users.signinRedirectCallback(location.href);
        const back =
          typeof user.state === 'string' && user.state.startsWith('#/') ? user.state : '#/';
        history.replaceState(null, '', `${location.pathname}${back}`);
      } catch (err) {
        history.replaceState(null, '', `${location.pathname}#/`);
        throw err;
      }
    }
    const user = await this.users.getUser();
    // An expired sign-in still counts while its refresh token can renew it.
    this.current = user && (!user.expired || user.refresh_token) ? user : null;
  }

  get signedIn(): boolean {
    return this.current !== null;
  }

  /** Who is signed in, as the ID token names them. */
  get who(): { name: string; groups: string[] } | undefined {
    const claims = this.current?.profile as Record<string, unknown> | undefined;
    if (!claims) return undefined;
    const name = String(claims.email ?? claims['cognito:username'] ?? claims.sub);
    const groups = Array.isArray(claims['cognito:groups'])
      ? (claims['cognito:groups'] as unknown[]).map(String)
      : [];
    return { name, groups };
  }

  /** Sends the browser to Cognito's sign-in page; it comes back to the current page. */
  async signIn(): Promise<void> {
    await this.users.signinRedirect({ state: location.hash || '#/' });
  }

  /** Revokes the refresh token, forgets the tokens and credentials, and signs out at Cognito. */
  async signOut(): Promise<void> {
    try {
      await this.users.revokeTokens(['refresh_token']);
    } catch {
      // Signing out goes on: the tokens are dropped below and expire by themselves.
    }
    await this.users.removeUser();
    sessionStorage.removeItem(IDENTITY_KEY);
    this.current = null;
    this.credentials = undefined;
    const logout = new URL(`${this.config.authDomain}/logout`);
    logout.searchParams.set('client_id', this.config.userPoolClientId);
    logout.searchParams.set('logout_uri', `${location.origin}/`);
    location.assign(logout.toString());
  }

  /** The person's AWS credentials, from the identity pool, fetched again before they expire. */
  async awsCredentials(): Promise<AwsCredentials> {
    const c = this.credentials;
    if (c?.expiration && c.expiration.getTime() - Date.now() > CREDENTIALS_MARGIN_MS) return c;
    this.pending ??= this.fetchCredentials().finally(() => (this.pending = undefined));
    return this.pending;
  }

  private async fetchCredentials(): Promise<AwsCredentials> {
    let user = this.current;
    if (!user) throw new SignInError('signed-out', 'not signed in: sign in first');
    if ((user.expires_in ?? 0) < TOKEN_MARGIN_S) {
      try {
        user = await this.users.signinSilent();
      } catch {
        user = null;
      }
      this.current = user;
      if (!user) throw new SignInError('signed-out', 'the sign-in has expired: sign in again');
    }
    const idToken = user.id_token;
    if (!idToken) throw new SignInError('signed-out', 'Cognito gave no ID token: sign in again');
    const login = {
      region: this.config.region,
      identityPoolId: this.config.identityPoolId,
      userPoolId: this.config.userPoolId,
      idToken,
    };
    try {
      const kept = sessionStorage.getItem(IDENTITY_KEY) ?? undefined;
      const got = await credentialsForLogin(login, kept).catch((err: unknown) => {
        // A kept identity that the pool no longer knows: start from GetId again.
        if (kept && err instanceof IdentityError && err.type === 'ResourceNotFoundException') {
          return credentialsForLogin(login);
        }
        throw err;
      });
      sessionStorage.setItem(IDENTITY_KEY, got.identityId);
      this.credentials = got.credentials;
      return got.credentials;
    } catch (err) {
      if (err instanceof IdentityError) {
        // The pool's rules deny anyone in neither group: the likeliest reason, so say it.
        throw new SignInError(
          'no-role',
          `Cognito Identity gave ${this.who?.name ?? 'this user'} no AWS credentials ` +
            `(${err.type}: ${err.message}); an administrator must add them to the operators ` +
            'or viewers group',
        );
      }
      throw new SignInError(
        'identity',
        `Cognito Identity did not answer: ${(err as Error).message}`,
      );
    }
  }

  /** Sends one API request to API Gateway, signed with the person's credentials. */
  readonly transport: Transport = async (method, path, body) => {
    const credentials = await this.awsCredentials();
    const base = this.config.apiUrl.endsWith('/') ? this.config.apiUrl : `${this.config.apiUrl}/`;
    const url = new URL(path.replace(/^\//, ''), base).toString();
    const headers: Record<string, string> = {};
    if (body !== undefined) headers['content-type'] = 'application/json';
    const signed = await signRequest(
      { method, url, headers, ...(body !== undefined ? { body } : {}) },
      { credentials, region: this.config.region },
    );
    return fetch(url, {
      method,
      headers: signed,
      credentials: 'omit',
      cache: 'no-store',
      ...(body !== undefined ? { body } : {}),
    });
  };
}
