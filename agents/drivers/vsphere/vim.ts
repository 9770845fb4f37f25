/**
 * A client of vSphere's Web Services API (SOAP, vim25) for the handful of calls Stowage makes:
 * one session (SessionManager.Login, the `vmware_soap_session` cookie, logged in again once when
 * the server says NotAuthenticated), PropertyCollector.RetrievePropertiesEx over a ContainerView
 * or a list of objects (with ContinueRetrievePropertiesEx for long answers), and tasks waited for
 * by polling their `info`. Faults become VimFault (a DriverError) carrying the fault's type.
 */
import { DriverError, TransientError, TargetNotFound } from '../../../kernel/errors';
import { HttpClient, readBody, type HttpOptions } from './http';
import {
  buildXml,
  child,
  isObject,
  list,
  moRef,
  needMoRef,
  optText,
  parseXml,
  refXml,
  text,
  viewObjectSpec,
  xsiType,
  type MoRef,
  type XmlObject,
  type XmlValue,
} from './xml';

/** SOAP answers are small (a VM's config is tens of KiB); more than this is not an answer. */
const MAX_ANSWER_BYTES = 64 * 1024 * 1024;
/** Task polling: from 50 ms, doubling to 1 s (tasks on a simulator end in milliseconds). */
const TASK_POLL_FIRST_MS = 50;
const TASK_POLL_MAX_MS = 1000;

export class VimFault extends DriverError {
  constructor(
    readonly faultType: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export interface VimOptions extends HttpOptions {
  /** `https://vcenter.example/sdk` (a bare host gets `/sdk`). */
  url: string;
  user: string;
  password: string;
}

export interface ServiceContent {
  rootFolder: MoRef;
  propertyCollector: MoRef;
  viewManager: MoRef;
  searchIndex: MoRef;
  fileManager: MoRef;
  virtualDiskManager?: MoRef;
  /** Custom attributes (vCenter only). */
  customFieldsManager?: MoRef;
  sessionManager: MoRef;
  apiVersion: string;
  apiType: string;
}

export interface ObjectProps {
  ref: MoRef;
  props: Record<string, XmlValue>;
}

export interface TaskOutcome {
  result?: XmlValue;
}

export function sdkUrl(raw: string): URL {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new DriverError(
      `--vsphere-url "${raw}" is not a URL; write https://vcenter.example.com/sdk`,
    );
  }
  if (url.pathname === '/' || url.pathname === '') url.pathname = '/sdk';
  return url;
}

export class VimClient {
  readonly http: HttpClient;
  readonly sdk: URL;
  private cookie: string | undefined;
  private content: ServiceContent | undefined;
  private loggingIn: Promise<void> | undefined;

  constructor(private readonly options: VimOptions) {
    this.sdk = sdkUrl(options.url);
    this.http = new HttpClient(this.sdk, options);
  }

  /** The service content, logging in on first use. */
  async service(): Promise<ServiceContent> {
    if (!this.content || !this.cookie) await this.login();
    return this.content!;
  }

  /** The session cookie for datastore HTTP access (`/folder`), logging in on first use. */
  async cookieHeader(): Promise<Record<string, string>> {
    await this.service();
    return this.cookie ? { Cookie: this.cookie } : {};
  }

  private login(): Promise<void> {
    this.loggingIn ??= (async () => {
      try {
        const sc = await this.post('RetrieveServiceContent', {
          _this: refXml({ type: 'ServiceInstance', value: 'ServiceInstance' }),
        });
        this.content = parseServiceContent(sc);
        this.cookie = undefined;
        await this.post('Login', {
          _this: refXml(this.content.sessionManager),
          userName: this.options.user,
          password: this.options.password,
        });
        if (!this.cookie)
          throw new DriverError('vSphere accepted the login but set no session cookie');
      } finally {
        this.loggingIn = undefined;
      }
    })();
    return this.loggingIn;
  }

  async logout(): Promise<void> {
    if (this.cookie && this.content) {
      await this.post('Logout', { _this: refXml(this.content.sessionManager) }).catch(
        () => undefined,
      );
    }
    this.cookie = undefined;
    this.http.close();
  }

  /**
   * Calls `method` on `that`; `args` in the WSDL's order. Resolves the <returnval> (undefined for
   * a void method). Logs in first, and again once if the session expired.
   */
  async call(
    method: string,
    that: MoRef,
    args: XmlObject = {},
    /** Aborts the request (a long poll that is no longer wanted). */
    signal?: AbortSignal,
  ): Promise<XmlValue | undefined> {
    await this.service();
    const body = { _this: refXml(that), ...args };
    try {
      return await this.post(method, body, signal);
    } catch (err) {
      if (!(err instanceof VimFault) || err.faultType !== 'NotAuthenticated') throw err;
      this.cookie = undefined;
      await this.login();
      return this.post(method, body, signal);
    }
  }

  private async post(
    method: string,
    body: XmlObject,
    signal?: AbortSignal,
  ): Promise<XmlValue | undefined> {
    const envelope =
      '<?xml version="1.0" encoding="UTF-8"?>' +
      buildXml({
        'soapenv:Envelope': {
          '@_xmlns:soapenv': 'http://schemas.xmlsoap.org/soap/envelope/',
          '@_xmlns:xsd': 'http://www.w3.org/2001/XMLSchema',
          '@_xmlns:xsi': 'http://www.w3.org/2001/XMLSchema-instance',
          'soapenv:Body': { [method]: { '@_xmlns': 'urn:vim25', ...body } },
        },
      });
    const headers: Record<string, string> = {
      'Content-Type': 'text/xml; charset=utf-8',
      SOAPAction: `urn:vim25/${this.content?.apiVersion ?? '6.5'}`,
    };
    if (this.cookie) headers.Cookie = this.cookie;
    const res = await this.http.send({
      method: 'POST',
      url: this.sdk,
      headers,
      body: Buffer.from(envelope),
      ...(signal ? { signal } : {}),
    });
    const setCookie = res.headers['set-cookie'];
    for (const c of setCookie ?? []) {
      const m = /^(vmware_soap_session=[^;]*)/.exec(c);
      if (m) this.cookie = m[1];
    }
    const raw = (await readBody(res, MAX_ANSWER_BYTES)).toString('utf8');
    const status = res.statusCode ?? 0;
    if (status === 503 || status === 502 || status === 504) {
      throw new TransientError(`vSphere answered ${method} with HTTP ${status}; retry`);
    }
    const doc = parseXml(raw, `vSphere's answer to ${method}`);
    const envelopeNode = child(doc, 'Envelope');
    const bodyNode = child(envelopeNode, 'Body');
    if (!isObject(bodyNode)) {
      throw new DriverError(
        `vSphere answered ${method} with HTTP ${status} and no SOAP body (is ${this.sdk.href} the SDK URL?)`,
      );
    }
    const fault = child(bodyNode, 'Fault');
    if (fault !== undefined) throw faultOf(method, fault);
    if (status >= 400) {
      throw new DriverError(`vSphere answered ${method} with HTTP ${status}`);
    }
    const response = child(bodyNode, `${method}Response`);
    return child(response, 'returnval');
  }

  /**
   * Properties of objects: `paths` of every object of `type` in the inventory (below `root`,
   * default the root folder), through a ContainerView destroyed afterwards.
   */
  async retrieveAll(type: string, paths: string[], root?: MoRef): Promise<ObjectProps[]> {
    const sc = await this.service();
    const view = moRef(
      await this.call('CreateContainerView', sc.viewManager, {
        container: refXml(root ?? sc.rootFolder),
        type,
        recursive: true,
      }),
    );
    if (!view) throw new DriverError('vSphere created a container view but returned no reference');
    try {
      return await this.retrieve({
        propSet: [{ type, pathSet: paths }],
        objectSet: [viewObjectSpec(view)],
      });
    } finally {
      await this.call('DestroyView', view).catch(() => undefined);
    }
  }

  /** Properties `paths` of the given objects (all of one type). */
  async retrieveOf(refs: MoRef[], paths: string[]): Promise<ObjectProps[]> {
    if (refs.length === 0) return [];
    return this.retrieve({
      propSet: [{ type: refs[0]!.type, pathSet: paths }],
      objectSet: refs.map((r) => ({ obj: refXml(r), skip: false })),
    });
  }

  /** One object's properties; TargetNotFound-worthy absence is the caller's to word. */
  async propsOf(ref: MoRef, paths: string[]): Promise<Record<string, XmlValue>> {
    const found = await this.retrieveOf([ref], paths);
    const one = found[0];
    if (!one) throw new TargetNotFound(`vSphere object ${ref.type} ${ref.value} no longer exists`);
    return one.props;
  }

  private async retrieve(specSet: XmlObject): Promise<ObjectProps[]> {
    const sc = await this.service();
    const out: ObjectProps[] = [];
    let answer: XmlValue | undefined;
    try {
      answer = await this.call('RetrievePropertiesEx', sc.propertyCollector, {
        specSet,
        options: {},
      });
    } catch (err) {
      if (err instanceof VimFault && err.faultType === 'ManagedObjectNotFound') return [];
      throw err;
    }
    for (;;) {
      for (const o of list(child(answer, 'objects'))) {
        const ref = needMoRef(o, 'obj', 'RetrievePropertiesEx');
        const props: Record<string, XmlValue> = {};
        for (const p of list(child(o, 'propSet'))) {
          const name = optText(p, 'name');
          const val = child(p, 'val');
          if (name !== undefined && val !== undefined) props[name] = val;
        }
        out.push({ ref, props });
      }
      const token = optText(answer, 'token');
      if (!token) return out;
      answer = await this.call('ContinueRetrievePropertiesEx', sc.propertyCollector, { token });
    }
  }

  /** Waits for a task to end; resolves its result, rejects with its fault as a VimFault. */
  async waitTask(task: MoRef, what: string, signal?: AbortSignal): Promise<TaskOutcome> {
    let delay = TASK_POLL_FIRST_MS;
    for (;;) {
      const props = await this.propsOf(task, ['info']);
      const info = props.info;
      const state = optText(info, 'state');
      if (state === 'success') {
        const result = child(info, 'result');
        return result === undefined ? {} : { result };
      }
      if (state === 'error') {
        const error = child(info, 'error');
        const fault = child(error, 'fault');
        const type = xsiType(fault) ?? 'Fault';
        const message = optText(error, 'localizedMessage') || type;
        throw new VimFault(type, `${what} failed in vSphere: ${message} (${type})`);
      }
      if (state !== 'queued' && state !== 'running') {
        throw new DriverError(
          `${what}: vSphere's task ${task.value} is in unknown state "${state}"`,
        );
      }
      if (signal?.aborted) {
        // The task runs on in vSphere; cancel it where it can be (CancelTask is best-effort).
        await this.call('CancelTask', task).catch(() => undefined);
        throw new TransientError(`${what} stopped: the job was abandoned`);
      }
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, TASK_POLL_MAX_MS);
    }
  }

  /** Calls a `..._Task` method and waits for it. */
  async runTask(
    method: string,
    that: MoRef,
    args: XmlObject,
    what: string,
    signal?: AbortSignal,
  ): Promise<TaskOutcome> {
    const task = moRef(await this.call(method, that, args));
    if (!task) throw new DriverError(`${what}: vSphere started no task for ${method}`);
    return this.waitTask(task, what, signal);
  }
}

function parseServiceContent(node: XmlValue | undefined): ServiceContent {
  const what = 'RetrieveServiceContent';
  const about = child(node, 'about');
  const vdm = moRef(child(node, 'virtualDiskManager'));
  const cfm = moRef(child(node, 'customFieldsManager'));
  return {
    rootFolder: needMoRef(node, 'rootFolder', what),
    propertyCollector: needMoRef(node, 'propertyCollector', what),
    viewManager: needMoRef(node, 'viewManager', what),
    searchIndex: needMoRef(node, 'searchIndex', what),
    fileManager: needMoRef(node, 'fileManager', what),
    sessionManager: needMoRef(node, 'sessionManager', what),
    ...(vdm ? { virtualDiskManager: vdm } : {}),
    ...(cfm ? { customFieldsManager: cfm } : {}),
    apiVersion: sanitizeVersion(optText(about, 'apiVersion')),
    apiType: optText(about, 'apiType') ?? 'unknown',
  };
}

/** The SOAPAction carries the version: only digits and dots from the server's answer. */
function sanitizeVersion(raw: string | undefined): string {
  return raw && /^\d+(\.\d+){0,3}$/.test(raw) ? raw : '6.5';
}

function faultOf(method: string, fault: XmlValue): VimFault {
  const message = text(child(fault, 'faultstring')) ?? 'no message';
  const detail = child(fault, 'detail');
  let type = 'Fault';
  if (isObject(detail)) {
    for (const [key, value] of Object.entries(detail)) {
      if (key.startsWith('@_')) continue;
      type = xsiType(value as XmlValue) ?? key.replace(/^.*:/, '').replace(/Fault$/, '');
      break;
    }
  }
  if (type === 'InvalidLogin') {
    return new VimFault(
      type,
      'vSphere refused the login: wrong --vsphere-user or the password in --vsphere-password-file',
    );
  }
  return new VimFault(type, `vSphere refused ${method}: ${message} (${type})`);
}
