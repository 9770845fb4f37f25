/**
 * The CLI's only way to Stowage: the HTTP API at STOWAGE_API (default the local port). Requests
 * to API Gateway (`*.execute-api.*`) are signed with SigV4 from the usual AWS credentials; the
 * signing modules load only then (they cost ~50 ms of start-up that local mode never needs).
 */

export const DEFAULT_PORT = 4780;
export const DEFAULT_API = `http://127.0.0.1:${DEFAULT_PORT}`;

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = code;
  }
}

export class Unreachable extends Error {
  override readonly name = 'Unreachable';
}

export class ApiClient {
  /**
   * `token`: local mode's bearer token (`<dataDir>/api-token`), sent to any API but API
   * Gateway's, which gets SigV4 instead.
   */
  constructor(
    readonly baseUrl: string,
    private readonly token?: string,
  ) {}

  get<T>(path: string): Promise<T> {
    return this.request<T>('GET', path);
  }

  post<T>(path: string, body: unknown): Promise<T> {
    return this.request<T>('POST', path, body);
  }

  patch<T>(path: string, body: unknown): Promise<T> {
    return this.request<T>('PATCH', path, body);
  }

  delete<T>(path: string): Promise<T> {
    return this.request<T>('DELETE', path);
  }

  private async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    const url = new URL(
      path.replace(/^\//, ''),
      this.baseUrl.endsWith('/') ? this.baseUrl : `${this.baseUrl}/`,
    );
    const payload = body === undefined ? undefined : JSON.stringify(body);
    let headers: Record<string, string> = {
      accept: 'application/json',
      ...(payload ? { 'content-type': 'application/json' } : {}),
    };
    if (/\.execute-api\.[a-z0-9-]+\.amazonaws\.com$/.test(url.hostname)) {
      headers = await sign(url, method, headers, payload);
    } else if (this.token) {
      headers.authorization = `Bearer ${this.token}`;
    }
    let res: { status: number; text: string };
    try {
      res = await send(url, method, headers, payload);
    } catch (err) {
      throw new Unreachable(
        `cannot reach the Stowage API at ${this.baseUrl} (${(err as Error).message}); is \`stowage start\` running, or is STOWAGE_API set?`,
      );
    }
    const { text } = res;
    let data: unknown;
    try {
      data = text ? JSON.parse(text) : undefined;
    } catch {
      data = { message: text };
    }
    if (res.status < 200 || res.status > 299) {
      const { error, message } = (data ?? {}) as { error?: string; message?: string };
      throw new ApiError(res.status, error ?? `HTTP${res.status}`, message ?? `HTTP ${res.status}`);
    }
    return data as T;
  }
}

/**
 * One request through node:http(s), not fetch: Node's fetch (undici) costs ~25 ms to load, a
 * sixth of the CLI's start-up budget, and the CLI makes a handful of small requests.
 */
async function send(
  url: URL,
  method: string,
  headers: Record<string, string>,
  payload: string | undefined,
): Promise<{ status: number; text: string }> {
  const { request } =
    url.protocol === 'https:' ? await import('node:https') : await import('node:http');
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      {
        method,
        headers: {
          ...headers,
          ...(payload !== undefined
            ? { 'content-length': String(Buffer.byteLength(payload)) }
            : {}),
        },
      },
      (res) => {
        const parts: Buffer[] = [];
        res.on('data', (part: Buffer) => parts.push(part));
        res.on('error', reject);
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, text: Buffer.concat(parts).toString('utf8') }),
        );
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

async function sign(url: URL, method: string, headers: Record<string, string>, body?: string) {
  const [{ Sha256 }, { defaultProvider }, { SignatureV4 }] = await Promise.all([
    import('@aws-crypto/sha256-js'),
    import('@aws-sdk/credential-provider-node'),
    import('@smithy/signature-v4'),
  ]);
  const region = /\.execute-api\.([a-z0-9-]+)\./.exec(url.hostname)![1]!;
  const signer = new SignatureV4({
    service: 'execute-api',
    region,
    credentials: defaultProvider(),
    sha256: Sha256,
  });
  const query: Record<string, string> = {};
  url.searchParams.forEach((v, k) => (query[k] = v));
  const signed = await signer.sign({
    method,
    protocol: url.protocol,
    hostname: url.hostname,
    path: url.pathname,
    query,
    headers: { ...headers, host: url.hostname },
    ...(body ? { body } : {}),
  });
  return signed.headers as Record<string, string>;
}
