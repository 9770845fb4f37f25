/**
 * SigV4 for the console's API calls in AWS: API Gateway's IAM auth (`execute-api`) accepts a
 * request only with a signature made with the caller's credentials (here, the identity pool's
 * short-lived credentials for the signed-in person's role). The signing itself is
 * @smithy/signature-v4, the AWS SDK's own, with a pure-JavaScript SHA-256.
 *
 * What is signed is exactly what fetch sends: the URL's host, its path as the URL object
 * encodes it (the signer URI-encodes each segment once more, as every service but S3 expects),
 * its query (decoded, the signer sorts and encodes it), `content-type` when there is a body, the
 * body, `x-amz-date` and the session token. No payload-hash header is added: API Gateway hashes
 * the body itself, and every extra header would be one more for the CORS preflight to allow.
 */
import { Sha256 } from '@aws-crypto/sha256-js';
import { SignatureV4 } from '@smithy/signature-v4';

export interface AwsCredentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
  expiration?: Date;
}

export interface UnsignedRequest {
  method: string;
  /** The absolute URL to call. */
  url: string;
  /** Headers to send and sign (lower-case names). */
  headers?: Record<string, string>;
  body?: string;
}

export interface SigningOptions {
  credentials: AwsCredentials;
  region: string;
  /** `execute-api` for API Gateway. */
  service?: string;
  /** The signature's time (now unless a test fixes it). */
  date?: Date;
}

/**
 * The headers to send with `request` (authorization, x-amz-date, x-amz-security-token and the
 * request's own), without `host`, which fetch sets itself to the same value.
 */
export async function signRequest(
  request: UnsignedRequest,
  options: SigningOptions,
): Promise<Record<string, string>> {
  const url = new URL(request.url);
  const signer = new SignatureV4({
    service: options.service ?? 'execute-api',
    region: options.region,
    credentials: options.credentials,
    sha256: Sha256,
    applyChecksum: false,
  });
  const query: Record<string, string | string[]> = {};
  url.searchParams.forEach((value, key) => {
    const seen = query[key];
    query[key] = seen === undefined ? value : [...[seen].flat(), value];
  });
  const signed = await signer.sign(
    {
      method: request.method,
      protocol: url.protocol,
      hostname: url.hostname,
      ...(url.port ? { port: Number(url.port) } : {}),
      path: url.pathname,
      query,
      headers: { ...(request.headers ?? {}), host: url.host },
      ...(request.body !== undefined ? { body: request.body } : {}),
    },
    options.date ? { signingDate: options.date } : {},
  );
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(signed.headers)) {
    if (name.toLowerCase() !== 'host') headers[name] = String(value);
  }
  return headers;
}
