// A YAML (or JSON) config file checked against a zod schema: a typed value, or every problem at once.
// Each message names the file, the path in it (idps.acme.token_url, providers[0].match) and what was
// expected, and never a value from the file: zod's own messages are replaced (an error map that reads
// no input), and a schema's messages are constant text. The only text from the file a message may
// show is a key (a field's or an IdP's name) and the name of an environment variable a secret is
// read from (the operator's pointer to where it lives, never the secret).
import { readFileSync } from 'node:fs';
import type { z } from 'zod';
import { isHttpsOrLoopbackUrl } from '../lib/loopback-url.js';
import { escapeControlCharacters, readYamlFile } from './values.js';
import { zod } from './zod.js';

type Issue = z.core.$ZodIssue;
type RawIssue = z.core.$ZodRawIssue;

/** A path as the docs write it: idps.acme.token_url, providers[0].match. */
export function formatPath(path: readonly PropertyKey[]): string {
  return path.map((part, index) => (typeof part === 'number' ? `[${part}]` : `${index === 0 ? '' : '.'}${escapeControlCharacters(String(part))}`)).join('');
}

const EXPECTED: Record<string, string> = {
  object: 'a mapping',
  array: 'a list',
  string: 'a string',
  number: 'a number',
  int: 'an integer',
  boolean: 'true or false',
};

/** zod's messages, rewritten from the issue's kind alone: the input is never read. */
function valueFreeMessage(issue: RawIssue): string {
  switch (issue.code) {
    case 'invalid_type':
      return issue.input === undefined ? 'is missing' : `must be ${EXPECTED[issue.expected] ?? issue.expected}`;
    case 'invalid_value':
      return `must be one of ${issue.values.map(String).join(', ')}`;
    case 'too_small':
      return `must be at least ${String(issue.minimum)}`;
    case 'too_big':
      return `must be at most ${String(issue.maximum)}`;
    case 'unrecognized_keys':
      return '';
    default:
      return 'is not valid';
  }
}

/** One problem line per issue (one per unknown key): the file, the path, then the message. */
function problemLines(file: string, issue: Issue): string[] {
  const where = formatPath(issue.path);
  const line = (path: string, message: string) =>
    path === '' ? `${file}: ${message.replace(/^: /, '')}` : `${file}: ${path}${message.startsWith(':') ? '' : ' '}${message}`;
  if (issue.code === 'unrecognized_keys') {
    return issue.keys.map((key) => line(where, `: unknown field "${escapeControlCharacters(key)}"${issue.message ? ` ${issue.message}` : ''}`));
  }
  return [line(where, issue.message)];
}

/**
 * Reads the YAML or JSON file `file` (named by `envName`) and checks it against `schema`. Every
 * problem joins `problems`; undefined when there was any.
 */
export function readYamlWithSchema<S extends z.ZodType>(file: string, envName: string, schema: S, problems: string[]): z.output<S> | undefined {
  const read = readYamlFile(file, envName, problems);
  return read ? checkWithSchema(read.root, file, schema, problems) : undefined;
}

/** The pure half of readYamlWithSchema: an already parsed `root` of `file` checked against `schema`. */
export function checkWithSchema<S extends z.ZodType>(root: unknown, file: string, schema: S, problems: string[]): z.output<S> | undefined {
  const result = schema.safeParse(root, { error: valueFreeMessage });
  if (result.success) return result.data;
  for (const issue of result.error.issues) problems.push(...problemLines(file, issue));
  return undefined;
}

/**
 * A mapping with these fields only; an unknown one is named with the known ones
 * (`unknown field "x" (known: a, b)`). `hidden` fields are refused by their own schemas and left out of the list.
 */
export function strictMapping<T extends z.core.$ZodLooseShape>(shape: T, message = 'must be a mapping', hidden: readonly string[] = []) {
  const z = zod();
  const known = Object.keys(shape).filter((key) => !hidden.includes(key));
  return z.strictObject(shape, { error: (issue) => (issue.code === 'unrecognized_keys' ? `(known: ${known.join(', ')})` : message) });
}

/** A field that must not be there at all (a secret written in the file): `message` if it is. */
export function forbidden(message: string) {
  const z = zod();
  return z.never({ error: message }).optional();
}

/**
 * A URL that secrets, or the keys that decide what is stored, travel over: https, or plain http on
 * this machine only (anything else could be read or swapped on the way). `noQuery`: an issuer
 * identifier, which has no query or fragment (OIDC Discovery 2). Kept as written.
 */
export function httpsUrl({ noQuery = false } = {}) {
  const z = zod();
  return z.string({ error: 'must be a URL' }).superRefine((value, ctx) => {
    let url: URL;
    try {
      url = new URL(value);
    } catch {
      ctx.addIssue({ code: 'custom', message: value === '' ? 'must be a URL' : 'is not a URL' });
      return;
    }
    if (!isHttpsOrLoopbackUrl(url)) ctx.addIssue({ code: 'custom', message: 'must be https (plain http only for 127.0.0.1/localhost)' });
    else if (noQuery && (url.search !== '' || url.hash !== '')) ctx.addIssue({ code: 'custom', message: 'must have no query or fragment' });
  });
}

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** The name of an environment variable holding a secret: its value (the secret) when set. */
export function secretFromEnv(env: NodeJS.ProcessEnv, field: string) {
  const z = zod();
  return z
    .string({ error: 'must be an environment variable name' })
    .regex(ENV_NAME, 'must be an environment variable name')
    .transform((name, ctx) => {
      const secret = env[name];
      if (!secret) ctx.addIssue({ code: 'custom', message: `: environment variable ${name} (${field}) is not set` });
      return secret ?? '';
    });
}

/** The path of a file holding a secret (one trailing newline dropped): the secret. Neither path nor content is quoted. */
export function secretFromFile() {
  const z = zod();
  return z
    .string({ error: 'must be a path' })
    .min(1, 'must be a path')
    .transform((file, ctx) => {
      try {
        const secret = readFileSync(file, 'utf8').replace(/\r?\n$/, '');
        if (secret === '') ctx.addIssue({ code: 'custom', message: ': the file it names is empty' });
        return secret;
      } catch (error) {
        ctx.addIssue({ code: 'custom', message: `: cannot read the file it names (${(error as NodeJS.ErrnoException).code ?? 'error'})` });
        return '';
      }
    });
}

/** `{ when }` for a check that runs even when a field already failed, so every problem is reported at once; it must read its input defensively. */
export const ALWAYS = { when: () => true } as const;

/** Adds an issue at `path` (relative to the checked value) with a constant message. */
export function addProblem(ctx: { addIssue: (issue: z.core.$ZodRawIssue) => void }, path: PropertyKey[], message: string): void {
  ctx.addIssue({ code: 'custom', path, message, input: undefined });
}
