/**
 * The API Gateway request models and parameters of the HTTP API, derived from its OpenAPI
 * document (functions/api/openapi.json, the same file the handler's routes are tested against),
 * so that API Gateway validates what it can before the function runs and the two cannot drift.
 *
 * API Gateway models are JSON Schema draft 4: `$ref`s are inlined, and OpenAPI's own keywords
 * (`example`, `nullable`, `discriminator`, `readOnly`...) are dropped or translated.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from './project';

type Schema = Record<string, unknown>;

interface Parameter {
  name: string;
  in: 'query' | 'path' | 'header';
  required?: boolean;
}

interface Operation {
  parameters?: Parameter[];
  requestBody?: { required?: boolean; content?: Record<string, { schema?: Schema }> };
}

export interface ApiOperation {
  /** The path as the document writes it, e.g. `/points/{id}`. */
  readonly path: string;
  readonly method: string;
  /** `method.request.querystring.X` / `method.request.path.X` → required. */
  readonly requestParameters: Record<string, boolean>;
  /** The JSON body's draft-4 schema (without `$schema`), when the operation takes one. */
  readonly bodySchema?: Schema;
}

export const OPENAPI_FILE = join(REPO_ROOT, 'functions', 'api', 'openapi.json');

/** OpenAPI 3.0 keywords that JSON Schema draft 4 does not have. */
const DROPPED = new Set([
  'example',
  'examples',
  'discriminator',
  'readOnly',
  'writeOnly',
  'xml',
  'externalDocs',
  'deprecated',
  'nullable',
]);

/** `schema` as draft 4, with every `#/components/schemas/X` inlined. */
export function toDraft4(schema: unknown, components: Record<string, Schema>, depth = 0): unknown {
  if (depth > 32) throw new Error('openapi.json: $ref nesting deeper than 32 (a cycle?)');
  if (Array.isArray(schema)) return schema.map((s) => toDraft4(s, components, depth + 1));
  if (!schema || typeof schema !== 'object') return schema;
  const source = schema as Schema;
  if (typeof source.$ref === 'string') {
    const name = source.$ref.replace('#/components/schemas/', '');
    const target = components[name];
    if (!target) throw new Error(`openapi.json: unknown $ref ${source.$ref}`);
    return toDraft4(target, components, depth + 1);
  }
  const out: Schema = {};
  for (const [key, value] of Object.entries(source)) {
    if (DROPPED.has(key)) continue;
    // `properties` maps names to schemas: its keys are not keywords.
    out[key] =
      key === 'properties'
        ? Object.fromEntries(
            Object.entries(value as Schema).map(([k, v]) => [
              k,
              toDraft4(v, components, depth + 1),
            ]),
          )
        : toDraft4(value, components, depth + 1);
  }
  if (source.nullable === true && typeof out.type === 'string') out.type = [out.type, 'null'];
  return out;
}

/** Every operation of the document, with its parameters and body schema. */
export function apiOperations(file = OPENAPI_FILE): ApiOperation[] {
  const doc = JSON.parse(readFileSync(file, 'utf8')) as {
    paths: Record<string, Record<string, Operation>>;
    components: { schemas: Record<string, Schema> };
  };
  const ops: ApiOperation[] = [];
  for (const [path, methods] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(methods)) {
      const requestParameters: Record<string, boolean> = {};
      for (const p of op.parameters ?? []) {
        if (p.in === 'query' || p.in === 'path') {
          requestParameters[
            `method.request.${p.in === 'query' ? 'querystring' : 'path'}.${p.name}`
          ] = p.in === 'path' || p.required === true;
        }
      }
      const schema = op.requestBody?.content?.['application/json']?.schema;
      ops.push({
        path,
        method: method.toUpperCase(),
        requestParameters,
        ...(schema
          ? {
              bodySchema: toDraft4(schema, doc.components.schemas) as Schema,
            }
          : {}),
      });
    }
  }
  return ops;
}
