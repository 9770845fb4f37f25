/**
 * The XML of vSphere's SOAP API (vim25), through fast-xml-parser: envelopes built from plain
 * objects whose keys are written in the WSDL's element order (real vCenter checks the order; the
 * simulator does not), and answers parsed into plain trees that the accessors below read.
 *
 * Every answer is hostile until read through these accessors: a missing or mistyped element is
 * a DriverError naming what was expected, never an undefined that travels on. A document with a
 * DOCTYPE is refused outright (SOAP has none; entity expansion is a classic parser attack).
 *
 * Tree conventions: an element is a string (text only) or an object; attributes are `@_name`
 * (`@_xsi:type` for the polymorphic type, `@_type` on a managed object reference); an element's
 * text beside attributes is `#text`; a repeated element is an array (use `list`).
 */
import { XMLBuilder, XMLParser } from 'fast-xml-parser';
import { DriverError } from '../../../kernel/errors';

export type XmlValue = string | XmlObject | XmlValue[];
export interface XmlObject {
  [key: string]: XmlValue | number | boolean | undefined;
}

/** A managed object reference: `<x type="VirtualMachine">vm-42</x>`. */
export interface MoRef {
  type: string;
  value: string;
}

const parser = new XMLParser({
  ignoreAttributes: false,
  attributeNamePrefix: '@_',
  parseTagValue: false,
  parseAttributeValue: false,
  trimValues: true,
  processEntities: true,
  htmlEntities: false,
});

const builder = new XMLBuilder({
  ignoreAttributes: false,
  attributeNamePrefix: '@_',
  suppressEmptyNode: false,
});

export function parseXml(text: string, what: string): XmlObject {
  if (/<!DOCTYPE/i.test(text.slice(0, 4096))) {
    throw new DriverError(`${what}: the answer holds a DOCTYPE, which SOAP never has; refused`);
  }
  try {
    return parser.parse(text) as XmlObject;
  } catch (err) {
    throw new DriverError(`${what}: the answer is not XML (${(err as Error).message})`, {
      cause: err,
    });
  }
}

export function buildXml(tree: XmlObject): string {
  return builder.build(tree) as string;
}

/** The element's local name without its namespace prefix. */
function localName(key: string): string {
  const colon = key.indexOf(':');
  return colon < 0 ? key : key.slice(colon + 1);
}

/** The child element `name` (any namespace prefix), or undefined. */
export function child(node: XmlValue | undefined, name: string): XmlValue | undefined {
  if (!isObject(node)) return undefined;
  if (name in node) return node[name] as XmlValue;
  for (const key of Object.keys(node)) {
    if (!key.startsWith('@_') && localName(key) === name) return node[key] as XmlValue;
  }
  return undefined;
}

export function isObject(node: unknown): node is XmlObject {
  return typeof node === 'object' && node !== null && !Array.isArray(node);
}

/** A repeated element as an array (absent: empty; one: a one-element array). */
export function list(node: XmlValue | undefined): XmlValue[] {
  if (node === undefined) return [];
  return Array.isArray(node) ? node : [node];
}

/** An element's text (`#text` beside attributes), or undefined. */
export function text(node: XmlValue | undefined): string | undefined {
  if (typeof node === 'string') return node;
  if (isObject(node)) {
    const t = node['#text'];
    if (typeof t === 'string') return t;
    if (typeof t === 'number' || typeof t === 'boolean') return String(t);
    // An element present but empty (<x></x>) parses as ''; with only attributes, no #text.
    return Object.keys(node).every((k) => k.startsWith('@_')) ? '' : undefined;
  }
  return undefined;
}

/** The `xsi:type` of a polymorphic element, without its namespace prefix. */
export function xsiType(node: XmlValue | undefined): string | undefined {
  if (!isObject(node)) return undefined;
  for (const key of Object.keys(node)) {
    if (key.startsWith('@_') && key.endsWith(':type')) return localName(String(node[key]));
  }
  return undefined;
}

export function moRef(node: XmlValue | undefined): MoRef | undefined {
  if (!isObject(node)) return undefined;
  const type = node['@_type'];
  const value = text(node);
  return typeof type === 'string' && value ? { type, value } : undefined;
}

/** For building: `<x type="T">v</x>`. */
export function refXml(ref: MoRef): XmlObject {
  return { '@_type': ref.type, '#text': ref.value };
}

/** An ObjectSpec for every object a ContainerView holds (the view itself skipped). */
export function viewObjectSpec(view: MoRef): XmlObject {
  return {
    obj: refXml(view),
    skip: true,
    selectSet: {
      '@_xsi:type': 'TraversalSpec',
      name: 'view',
      type: 'ContainerView',
      path: 'view',
      skip: false,
    },
  };
}

/** Element `name` of `node` as text; a DriverError naming `what` when it is missing. */
export function needText(node: XmlValue | undefined, name: string, what: string): string {
  const value = text(child(node, name));
  if (value === undefined) {
    throw new DriverError(`${what}: vSphere's answer lacks <${name}>`);
  }
  return value;
}

export function optText(node: XmlValue | undefined, name: string): string | undefined {
  return text(child(node, name));
}

/** Element `name` as a non-negative safe integer; a DriverError when it is not one. */
export function needInt(node: XmlValue | undefined, name: string, what: string): number {
  const raw = needText(node, name, what);
  return checkedInt(raw, `${what}: <${name}>`);
}

export function optInt(node: XmlValue | undefined, name: string, what: string): number | undefined {
  const raw = optText(node, name);
  return raw === undefined || raw === '' ? undefined : checkedInt(raw, `${what}: <${name}>`);
}

export function checkedInt(raw: string, what: string): number {
  if (!/^-?\d{1,16}$/.test(raw.trim())) {
    throw new DriverError(`${what} is "${raw.slice(0, 40)}", not an integer`);
  }
  const n = Number(raw);
  if (!Number.isSafeInteger(n)) throw new DriverError(`${what} is out of range (${raw})`);
  return n;
}

export function optBool(node: XmlValue | undefined, name: string): boolean | undefined {
  const raw = optText(node, name);
  if (raw === undefined) return undefined;
  return raw === 'true' || raw === '1';
}

export function needMoRef(node: XmlValue | undefined, name: string, what: string): MoRef {
  const ref = moRef(child(node, name));
  if (!ref) throw new DriverError(`${what}: vSphere's answer lacks the reference <${name}>`);
  return ref;
}

/**
 * Removes the fields of a parsed subtree that name this server's objects or state, so a saved
 * device can be replayed elsewhere (keys listed by the caller). Returns a deep copy.
 */
export function without(node: XmlValue, drop: readonly string[]): XmlValue {
  if (Array.isArray(node)) return node.map((n) => without(n, drop));
  if (!isObject(node)) return node;
  const out: XmlObject = {};
  for (const [key, value] of Object.entries(node)) {
    if (drop.includes(key) || value === undefined) continue;
    out[key] =
      typeof value === 'object' ? without(value, drop) : (value as string | number | boolean);
  }
  return out;
}
