// Envoy's `xds.route_metadata` attribute: the route's Metadata message, which Envoy hands to the
// ext_proc server as protobuf *text format* in a string (checked with Envoy 1.40), e.g.
//   filter_metadata { key: "envoy-gateway" value { fields { key: "resources" value { list_value {...} } } } }
// Pure and total: text in, plain values out; anything unreadable gives undefined, never a throw.

/** A parsed text-format message: its fields in order (a repeated field appears once per value). */
type TextMessage = Array<[string, string | TextMessage]>;

const MAX_TEXT = 64 * 1024;
const MAX_DEPTH = 32;

// Never leaves this module (parseRouteMetadata catches it and gives undefined), so it is not a
// TokenTapError: capture/ stays free of imports.
class TextFormatError extends Error {
  override name = 'TextFormatError';
}

function unescapeText(body: string): string {
  return body.replace(/\\(x[0-9a-fA-F]{1,2}|[0-7]{1,3}|.)/g, (_, sequence: string) => {
    if (sequence[0] === 'x') return String.fromCharCode(Number.parseInt(sequence.slice(1), 16));
    if (/^[0-7]/.test(sequence)) return String.fromCharCode(Number.parseInt(sequence, 8));
    return ({ n: '\n', t: '\t', r: '\r' } as Record<string, string>)[sequence] ?? sequence;
  });
}

function tokenize(text: string): string[] {
  const tokens: string[] = [];
  const pattern = /\s+|#[^\n]*|"((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)'|([A-Za-z0-9_.+-]+)|([{}[\]:,;<>])/gy;
  let match: RegExpExecArray | null;
  while (pattern.lastIndex < text.length && (match = pattern.exec(text)) !== null) {
    if (match[1] !== undefined || match[2] !== undefined) tokens.push(`"${unescapeText(match[1] ?? match[2]!)}`);
    else if (match[3] !== undefined) tokens.push(match[3]);
    else if (match[4] !== undefined) tokens.push(match[4]);
  }
  if (pattern.lastIndex < text.length) throw new TextFormatError('unexpected character');
  return tokens;
}

function parseMessage(tokens: string[], at: { i: number }, depth: number, close: string | undefined): TextMessage {
  if (depth > MAX_DEPTH) throw new TextFormatError('too deep');
  const fields: TextMessage = [];
  while (at.i < tokens.length) {
    const name = tokens[at.i]!;
    if (name === close) {
      at.i += 1;
      return fields;
    }
    if (!/^[A-Za-z_]/.test(name)) throw new TextFormatError('field name expected');
    at.i += 1;
    if (tokens[at.i] === ':') at.i += 1;
    const values = tokens[at.i] === '[' ? list(tokens, at, depth) : [value(tokens, at, depth)];
    for (const item of values) fields.push([name, item]);
    if (tokens[at.i] === ',' || tokens[at.i] === ';') at.i += 1;
  }
  if (close !== undefined) throw new TextFormatError('unterminated message');
  return fields;
}

function list(tokens: string[], at: { i: number }, depth: number): Array<string | TextMessage> {
  at.i += 1;
  const items: Array<string | TextMessage> = [];
  while (tokens[at.i] !== ']') {
    if (at.i >= tokens.length) throw new TextFormatError('unterminated list');
    items.push(value(tokens, at, depth));
    if (tokens[at.i] === ',') at.i += 1;
  }
  at.i += 1;
  return items;
}

function value(tokens: string[], at: { i: number }, depth: number): string | TextMessage {
  const token = tokens[at.i];
  if (token === undefined) throw new TextFormatError('value expected');
  if (token === '{' || token === '<') {
    at.i += 1;
    return parseMessage(tokens, at, depth + 1, token === '{' ? '}' : '>');
  }
  if (token.startsWith('"')) {
    // Adjacent string literals concatenate.
    let text = '';
    while (tokens[at.i]?.startsWith('"')) text += tokens[at.i++]!.slice(1);
    return text;
  }
  if (/^[{}[\]:,;<>]$/.test(token)) throw new TextFormatError('value expected');
  at.i += 1;
  return token;
}

function field(message: TextMessage, name: string): string | TextMessage | undefined {
  return message.find(([key]) => key === name)?.[1];
}

/** google.protobuf.Value (text format) → a plain value. */
function plainValue(message: TextMessage): unknown {
  const [kind, inner] = message[0] ?? [];
  if (kind === 'string_value') return typeof inner === 'string' ? inner : undefined;
  if (kind === 'number_value') return Number(inner);
  if (kind === 'bool_value') return inner === 'true';
  if (kind === 'null_value') return null;
  if (kind === 'struct_value') return Array.isArray(inner) ? plainStruct(inner) : undefined;
  if (kind === 'list_value' && Array.isArray(inner))
    return inner.filter(([key]) => key === 'values').map(([, item]) => (Array.isArray(item) ? plainValue(item) : undefined));
  return undefined;
}

/** google.protobuf.Struct (text format) → a plain object. */
function plainStruct(message: TextMessage): Record<string, unknown> {
  const result: Record<string, unknown> = {};
  for (const [key, entry] of message) {
    if (key !== 'fields' || !Array.isArray(entry)) continue;
    const name = field(entry, 'key');
    const inner = field(entry, 'value');
    if (typeof name === 'string' && Array.isArray(inner)) result[name] = plainValue(inner);
  }
  return result;
}

/**
 * The `filter_metadata` of a route's Metadata in text format, as plain objects by namespace.
 * (`typed_filter_metadata` is left out: its values are Any messages we have no use for.)
 */
export function filterMetadataFromText(text: string): Record<string, Record<string, unknown>> | undefined {
  if (text.length > MAX_TEXT) return undefined;
  try {
    const message = parseMessage(tokenize(text), { i: 0 }, 0, undefined);
    const result: Record<string, Record<string, unknown>> = {};
    for (const [key, entry] of message) {
      if (key !== 'filter_metadata' || !Array.isArray(entry)) continue;
      const namespace = field(entry, 'key');
      const struct = field(entry, 'value');
      if (typeof namespace === 'string' && Array.isArray(struct)) result[namespace] = plainStruct(struct);
    }
    return result;
  } catch (error) {
    if (error instanceof TextFormatError || error instanceof RangeError) return undefined;
    throw error;
  }
}
