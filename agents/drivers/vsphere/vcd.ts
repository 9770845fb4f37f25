/**
 * A client of VMware Cloud Director's REST API (API version 36.0, JSON), for the vApps a vCD
 * manages on top of vSphere: a vApp found by name (the query service), maintenance mode on and
 * off (`action/enterMaintenanceMode`, `action/exitMaintenanceMode`: while on, vCD users cannot
 * change the vApp), and the metadata a restore must put back: the vApp's own user-defined
 * metadata, lease settings and network configuration, with its organisation's and VDC's names,
 * metadata and quotas (recorded; an organisation or VDC is not re-created by a vApp restore).
 *
 * Login: POST /cloudapi/1.0.0/sessions with Basic `user@org:password`; the answer's
 * `X-VMWARE-VCLOUD-ACCESS-TOKEN` is sent as a Bearer token after that. Calls that change
 * something answer a Task, waited for by polling its `status` (success, error, aborted).
 *
 * No vCD simulator exists: test/contract/vcd-client.test.ts runs this client against a small
 * local HTTP fake built from the API's documented payloads (test/fixtures/vcd-fake.ts).
 */
import { readFileSync } from 'node:fs';
import {
  DriverError,
  TargetNotFound,
  TransientError,
  ValidationError,
} from '../../../kernel/errors';
import { HttpClient, readBody } from './http';

const ACCEPT = 'application/*+json;version=36.0';
const MAX_ANSWER_BYTES = 16 * 1024 * 1024;
const TASK_POLL_MS = 250;

export interface VcdOptions {
  /** `https://vcd.example.com` (the API is under /api and /cloudapi). */
  url: string;
  /** `user@org` (`administrator@System` for a provider login). */
  user: string;
  password?: string;
  passwordFile?: string;
  insecure?: boolean;
}

export interface MetadataEntry {
  key: string;
  value: string;
  /** `MetadataStringValue`, `MetadataNumberValue`, `MetadataBooleanValue`, `MetadataDateTimeValue`. */
  type: string;
  /** `GENERAL` or `SYSTEM` (with its visibility), when vCD says. */
  domain?: { visibility: string; domain: string };
}

/** What a vApp point keeps of vCD. */
export interface VcdRecord {
  vapp: {
    href: string;
    name: string;
    description?: string;
    metadata: MetadataEntry[];
    lease?: { deploymentLeaseInSeconds: number; storageLeaseInSeconds: number };
    networkConfig?: unknown;
  };
  vdc?: {
    href: string;
    /** The admin view's href (`/api/admin/vdc/ID`), where quotas and metadata are changed. */
    adminHref?: string;
    name: string;
    metadata: MetadataEntry[];
    quotas: VdcQuotas;
  };
  org?: { href: string; adminHref?: string; name: string; metadata: MetadataEntry[] };
}

/** What a point keeps of a VDC's allocation (VdcType / AdminVdcType). */
export interface VdcQuotas {
  computeCapacity?: unknown;
  vmQuota?: unknown;
  networkQuota?: unknown;
  allocationModel?: unknown;
}

/** vCD answered 403: the user may not do this (an org or VDC setting needs an admin). */
export class VcdForbidden extends DriverError {}

/** What putting a point's org and VDC settings back did, and what it could not. */
export interface SettingsOutcome {
  applied: string[];
  /** Each with why: the API has no way, the user lacks the right, or the VDC or org is gone. */
  notApplied: string[];
}

type Json = Record<string, unknown>;

export class VcdClient {
  private readonly base: URL;
  private readonly http: HttpClient;
  private token: string | undefined;

  constructor(private readonly options: VcdOptions) {
    try {
      this.base = new URL(options.url);
    } catch {
      throw new ValidationError(
        `--vcd-url "${options.url}" is not a URL; write https://vcd.example.com`,
      );
    }
    this.http = new HttpClient(this.base, options.insecure ? { insecure: true } : {});
  }

  private password(): string {
    if (this.options.password !== undefined) return this.options.password;
    if (!this.options.passwordFile)
      throw new ValidationError('vCloud Director needs --vcd-password-file');
    return readFileSync(this.options.passwordFile, 'utf8').replace(/\r?\n$/, '');
  }

  private async login(): Promise<void> {
    const basic = Buffer.from(`${this.options.user}:${this.password()}`).toString('base64');
    const res = await this.http.send({
      method: 'POST',
      url: new URL('/cloudapi/1.0.0/sessions', this.base),
      headers: { Accept: 'application/json;version=36.0', Authorization: `Basic ${basic}` },
    });
    await readBody(res, MAX_ANSWER_BYTES);
    if (res.statusCode === 401 || res.statusCode === 403) {
      throw new DriverError(
        'vCloud Director refused the login: check --vcd-user (user@org) and its password',
      );
    }
    const token = res.headers['x-vmware-vcloud-access-token'];
    if (res.statusCode !== 200 || typeof token !== 'string' || !token) {
      throw new DriverError(
        `vCloud Director answered the login with HTTP ${res.statusCode} and no access token`,
      );
    }
    this.token = token;
  }

  /** One call; logs in first and once more on a 401. Resolves the JSON body (undefined for 204). */
  async request(
    method: 'GET' | 'POST' | 'PUT',
    href: string,
    body?: unknown,
    /** The body's documented media type, where vCD wants its own (the admin extension's). */
    contentType = 'application/*+json;version=36.0',
  ): Promise<Json | undefined> {
    for (let attempt = 0; ; attempt++) {
      if (!this.token) await this.login();
      const url = new URL(href, this.base);
      if (url.origin !== this.base.origin) {
        throw new DriverError(
          `vCloud Director sent a link to another host (${url.origin}); refused`,
        );
      }
      const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
      const res = await this.http.send({
        method,
        url,
        headers: {
          Accept: ACCEPT,
          Authorization: `Bearer ${this.token}`,
          ...(payload ? { 'Content-Type': contentType } : {}),
        },
        ...(payload ? { body: payload } : {}),
      });
      const raw = (await readBody(res, MAX_ANSWER_BYTES)).toString('utf8');
      const status = res.statusCode ?? 0;
      if (status === 401 && attempt === 0) {
        this.token = undefined;
        continue;
      }
      if (status === 404)
        throw new TargetNotFound(`vCloud Director has nothing at ${url.pathname}`);
      if (status === 403) {
        throw new VcdForbidden(
          `vCloud Director does not let ${this.options.user} ${method} ${url.pathname} (HTTP 403)`,
        );
      }
      if (status >= 500)
        throw new TransientError(
          `vCloud Director answered ${method} ${url.pathname} with HTTP ${status}`,
        );
      if (status >= 400) {
        let message = raw.slice(0, 300);
        try {
          message = String((JSON.parse(raw) as Json).message ?? message);
        } catch {
          // not JSON: the raw text says it
        }
        throw new DriverError(
          `vCloud Director refused ${method} ${url.pathname} (HTTP ${status}): ${message}`,
        );
      }
      if (!raw) return undefined;
      try {
        return JSON.parse(raw) as Json;
      } catch {
        throw new DriverError(
          `vCloud Director answered ${method} ${url.pathname} with something not JSON`,
        );
      }
    }
  }

  /** Waits for a Task answer to end; a 204 (no task) is done already. */
  async waitTask(task: Json | undefined, what: string): Promise<void> {
    let t = task;
    for (;;) {
      if (!t || t.status === 'success') return;
      if (t.status === 'error' || t.status === 'aborted' || t.status === 'canceled') {
        const error = (t.error as Json | undefined)?.message ?? t.status;
        throw new DriverError(`${what} failed in vCloud Director: ${String(error)}`);
      }
      if (typeof t.href !== 'string')
        throw new DriverError(`${what}: vCloud Director's task has no href`);
      await new Promise((r) => setTimeout(r, TASK_POLL_MS));
      t = await this.request('GET', t.href);
    }
  }

  /** The vApp's href by name (the query service); TargetNotFound when vCD has none. */
  async findVapp(name: string): Promise<string> {
    const q = new URLSearchParams({ type: 'vApp', format: 'records', filter: `name==${name}` });
    const answer = await this.request('GET', `/api/query?${q.toString()}`);
    const records = (answer?.record as Json[] | undefined) ?? [];
    if (records.length > 1)
      throw new DriverError(`vCloud Director has ${records.length} vApps named ${name}`);
    const href = records[0]?.href;
    if (typeof href !== 'string')
      throw new TargetNotFound(`vCloud Director has no vApp named ${name}`);
    return href;
  }

  /**
   * Maintenance mode on the vApp for the duration of `work`, off again in a finally whatever
   * `work` did; a failure to leave it is logged by the caller through `onExitFailed`, never
   * hidden.
   */
  async inMaintenance<T>(
    vappHref: string,
    work: () => Promise<T>,
    onExitFailed: (err: unknown) => void,
  ): Promise<T> {
    await this.waitTask(
      await this.request('POST', `${vappHref}/action/enterMaintenanceMode`),
      'entering maintenance mode',
    );
    try {
      return await work();
    } finally {
      try {
        await this.waitTask(
          await this.request('POST', `${vappHref}/action/exitMaintenanceMode`),
          'leaving maintenance mode',
        );
      } catch (err) {
        onExitFailed(err);
      }
    }
  }

  async metadataOf(href: string): Promise<MetadataEntry[]> {
    const answer = await this.request('GET', `${href}/metadata`);
    const entries = (answer?.metadataEntry as Json[] | undefined) ?? [];
    return entries.map((e) => {
      const typed = (e.typedValue as Json | undefined) ?? {};
      const domain = e.domain as Json | undefined;
      return {
        key: String(e.key),
        value: String(typed.value ?? ''),
        type: String(typed._type ?? 'MetadataStringValue'),
        ...(domain
          ? {
              domain: {
                visibility: String(domain.visibility ?? 'READWRITE'),
                domain: String(domain.value ?? 'GENERAL'),
              },
            }
          : {}),
      };
    });
  }

  /** Everything a vApp point keeps of vCD: the vApp's metadata, lease and networks, its VDC and org. */
  async record(vappHref: string): Promise<VcdRecord> {
    const vapp = (await this.request('GET', vappHref)) ?? {};
    const links = (vapp.link as Json[] | undefined) ?? [];
    const up = links.find((l) => l.rel === 'up' && String(l.type ?? '').includes('vdc'));
    const lease = await this.request('GET', `${vappHref}/leaseSettingsSection/`);
    const network = await this.request('GET', `${vappHref}/networkConfigSection/`);
    const out: VcdRecord = {
      vapp: {
        href: vappHref,
        name: String(vapp.name ?? ''),
        ...(typeof vapp.description === 'string' ? { description: vapp.description } : {}),
        metadata: await this.metadataOf(vappHref),
        ...(lease
          ? {
              lease: {
                deploymentLeaseInSeconds: Number(lease.deploymentLeaseInSeconds ?? 0),
                storageLeaseInSeconds: Number(lease.storageLeaseInSeconds ?? 0),
              },
            }
          : {}),
        ...(network ? { networkConfig: network.networkConfig ?? network } : {}),
      },
    };
    if (up && typeof up.href === 'string') {
      const vdc = (await this.request('GET', up.href)) ?? {};
      const adminVdc = alternate(vdc, 'admin.vdc') ?? adminOf(up.href, 'vdc');
      out.vdc = {
        href: up.href,
        ...(adminVdc ? { adminHref: adminVdc } : {}),
        name: String(vdc.name ?? ''),
        metadata: await this.metadataOf(up.href),
        quotas: {
          computeCapacity: vdc.computeCapacity,
          vmQuota: vdc.vmQuota,
          networkQuota: vdc.networkQuota,
          allocationModel: vdc.allocationModel,
        },
      };
      const orgLink = ((vdc.link as Json[] | undefined) ?? []).find(
        (l) => l.rel === 'up' && String(l.type ?? '').includes('org'),
      );
      if (orgLink && typeof orgLink.href === 'string') {
        const org = (await this.request('GET', orgLink.href)) ?? {};
        const adminOrg = alternate(org, 'admin.organization') ?? adminOf(orgLink.href, 'org');
        out.org = {
          href: orgLink.href,
          ...(adminOrg ? { adminHref: adminOrg } : {}),
          name: String(org.name ?? ''),
          metadata: await this.metadataOf(orgLink.href),
        };
      }
    }
    return out;
  }

  /**
   * Puts a vApp's recorded metadata, lease and description back (the vApp at `vappHref`, which
   * a restore made or found): metadata merged (POST .../metadata, the keys it lacks added and the
   * others set), the lease replaced. The org's and VDC's are recorded only.
   */
  async putBack(vappHref: string, record: VcdRecord): Promise<void> {
    const { vapp } = record;
    await this.mergeMetadata(vappHref, vapp.metadata, 'the vApp');
    if (vapp.lease) {
      await this.waitTask(
        await this.request('PUT', `${vappHref}/leaseSettingsSection/`, {
          _type: 'LeaseSettingsSectionType',
          ...vapp.lease,
        }),
        'putting back the vApp lease',
      );
    }
  }

  /** POST .../metadata: the entries merged into what the object has (added or set). */
  private async mergeMetadata(href: string, entries: MetadataEntry[], what: string): Promise<void> {
    if (entries.length === 0) return;
    await this.waitTask(
      await this.request('POST', `${href}/metadata`, {
        metadataEntry: entries.map((m) => ({
          key: m.key,
          typedValue: { _type: m.type, value: m.value },
          ...(m.domain
            ? { domain: { visibility: m.domain.visibility, value: m.domain.domain } }
            : {}),
        })),
      }),
      `putting back the metadata of ${what}`,
    );
  }

  /**
   * Puts the organisation's and VDC's recorded settings back where vCD's documented API allows,
   * through the admin views (`/api/admin/org/ID`, `/api/admin/vdc/ID`), which need an
   * organisation or system administrator:
   *
   * - the VDC's metadata and the org's metadata: merged (POST .../metadata);
   * - the VDC's compute capacity (CPU and memory allocation, reservation, limit), VM quota and
   *   network quota: the admin VDC read, changed where it differs, written back (PUT);
   * - the VDC's allocation model is not changed: vCD sets it when the VDC is created and
   *   refuses to change it afterwards, so a different one is reported;
   * - an org or VDC that no longer exists is not made again (creating them is the provider's
   *   business, with provider VDCs and networks a point does not hold): reported.
   *
   * A refusal (HTTP 403: the user is not an administrator) is reported, not thrown: the vApp is
   * restored either way.
   */
  async putBackSettings(record: VcdRecord): Promise<SettingsOutcome> {
    const out: SettingsOutcome = { applied: [], notApplied: [] };
    const attempt = async (what: string, step: () => Promise<boolean>) => {
      try {
        if (await step()) out.applied.push(what);
      } catch (err) {
        if (err instanceof VcdForbidden) {
          out.notApplied.push(
            `${what}: ${this.options.user} may not change it (needs an org or system administrator)`,
          );
        } else if (err instanceof TargetNotFound) {
          out.notApplied.push(
            `${what}: it no longer exists in vCloud Director, and a restore does not create it`,
          );
        } else throw err;
      }
    };
    const { vdc, org } = record;
    if (vdc) {
      const admin = vdc.adminHref ?? adminOf(vdc.href, 'vdc');
      if (!admin) out.notApplied.push(`VDC ${vdc.name}: no admin view of it is known`);
      else {
        await attempt(`metadata of VDC ${vdc.name}`, async () => {
          await this.mergeMetadata(admin, vdc.metadata, `VDC ${vdc.name}`);
          return vdc.metadata.length > 0;
        });
        await attempt(`quotas of VDC ${vdc.name}`, async () => {
          const now = (await this.request('GET', admin)) ?? {};
          if (
            vdc.quotas.allocationModel !== undefined &&
            now.allocationModel !== undefined &&
            now.allocationModel !== vdc.quotas.allocationModel
          ) {
            out.notApplied.push(
              `allocation model of VDC ${vdc.name}: it is ${String(now.allocationModel)}, was ${String(vdc.quotas.allocationModel)}; vCloud Director sets it only when a VDC is created`,
            );
          }
          const next: Json = { ...now };
          let changed = false;
          for (const key of ['computeCapacity', 'vmQuota', 'networkQuota'] as const) {
            const want = vdc.quotas[key];
            if (want === undefined || JSON.stringify(now[key]) === JSON.stringify(want)) continue;
            next[key] = key === 'computeCapacity' ? capacityOf(now[key], want) : want;
            changed = true;
          }
          if (!changed) return false;
          await this.waitTask(
            await this.request(
              'PUT',
              admin,
              next,
              'application/vnd.vmware.admin.vdc+json;version=36.0',
            ),
            `putting back the quotas of VDC ${vdc.name}`,
          );
          return true;
        });
      }
    }
    if (org) {
      const admin = org.adminHref ?? adminOf(org.href, 'org');
      if (!admin) out.notApplied.push(`organisation ${org.name}: no admin view of it is known`);
      else {
        await attempt(`metadata of organisation ${org.name}`, async () => {
          await this.mergeMetadata(admin, org.metadata, `organisation ${org.name}`);
          return org.metadata.length > 0;
        });
      }
    }
    return out;
  }

  /**
   * Imports VMs that vSphere has and vCD does not manage into a VDC as one new vApp `name`
   * (the admin extension's documented import, which needs a system administrator): the first
   * VM with `importVmAsVApp`, the others with `importVmIntoExistingVApp`, each moved into vCD
   * (`sourceMove`: the VM is vCD's afterwards, not copied). Resolves the new vApp's href.
   */
  async importVapp(
    name: string,
    vdcHref: string,
    vmMoRefs: string[],
    vsphereUrl: string,
  ): Promise<string> {
    const [first, ...rest] = vmMoRefs;
    if (!first) throw new DriverError(`vApp ${name} has no VM to import into vCloud Director`);
    const server = await this.vimServerFor(vsphereUrl);
    const vapp = await this.request(
      'POST',
      `${server}/importVmAsVApp`,
      { name, sourceMove: true, vmMoRef: first, vdc: { href: vdcHref } },
      'application/vnd.vmware.admin.importVmAsVAppParams+json;version=36.0',
    );
    const href = vapp?.href;
    if (typeof href !== 'string') {
      throw new DriverError(`vCloud Director imported ${name} but answered no vApp href`);
    }
    for (const task of tasksOf(vapp)) await this.waitTask(task, `importing ${first} into ${name}`);
    for (const vm of rest) {
      await this.waitTask(
        await this.request(
          'POST',
          `${server}/importVmIntoExistingVApp`,
          { sourceMove: true, vmMoRef: vm, vApp: { href } },
          'application/vnd.vmware.admin.importVmIntoExistingVAppParams+json;version=36.0',
        ),
        `importing ${vm} into ${name}`,
      );
    }
    return href;
  }

  /** The vCenter registration (vimServer) whose URL names the agent's vSphere host. */
  private async vimServerFor(vsphereUrl: string): Promise<string> {
    const refs = await this.request('GET', '/api/admin/extension/vimServerReferences');
    const servers = ((refs?.vimServerReference as Json[] | undefined) ?? [])
      .map((r) => r.href)
      .filter((h): h is string => typeof h === 'string');
    if (servers.length === 0) throw new DriverError('vCloud Director has no vCenter registered');
    const host = new URL(vsphereUrl).hostname;
    const names: string[] = [];
    for (const href of servers) {
      const server = (await this.request('GET', href)) ?? {};
      const url = typeof server.url === 'string' ? server.url : '';
      names.push(url || String(server.name ?? href));
      try {
        if (new URL(url).hostname === host) return href;
      } catch {
        // not a URL: not this one
      }
    }
    throw new DriverError(
      `vCloud Director has no vCenter registered at ${host} (it has ${names.join(', ')}); the restored vApp cannot be imported`,
    );
  }

  close(): void {
    this.http.close();
  }
}

/** An object's link `rel="alternate"` of a media type ending in `<kind>+json` (its admin view). */
function alternate(object: Json, kind: string): string | undefined {
  const link = ((object.link as Json[] | undefined) ?? []).find(
    (l) => l.rel === 'alternate' && String(l.type ?? '').includes(`${kind}+`),
  );
  return typeof link?.href === 'string' ? link.href : undefined;
}

/** `/api/vdc/ID` → `/api/admin/vdc/ID` (the documented admin view of the same object). */
function adminOf(href: string, kind: 'vdc' | 'org'): string | undefined {
  const m = new RegExp(`^(.*?/api)/${kind}/([^/]+)$`).exec(href);
  return m ? `${m[1]}/admin/${kind}/${m[2]}` : undefined;
}

/** The tasks an answer carries (`tasks.task[]`), to wait for. */
function tasksOf(answer: Json | undefined): Json[] {
  return ((answer?.tasks as Json | undefined)?.task as Json[] | undefined) ?? [];
}

/**
 * The compute capacity to write: the admin VDC's own, with the recorded allocation,
 * reservation and limit of CPU and memory (what is in use is the VDC's, never written).
 */
function capacityOf(now: unknown, want: unknown): unknown {
  const out: Json = { ...((now as Json | undefined) ?? {}) };
  for (const part of ['cpu', 'memory'] as const) {
    const w = (want as Json | undefined)?.[part] as Json | undefined;
    if (!w) continue;
    const n: Json = { ...((out[part] as Json | undefined) ?? {}) };
    for (const k of ['units', 'allocated', 'reserved', 'limit'] as const) {
      if (w[k] !== undefined) n[k] = w[k];
    }
    out[part] = n;
  }
  return out;
}
