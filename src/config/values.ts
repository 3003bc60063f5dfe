// Reading settings: addresses, integers, booleans and YAML files. Each problem joins a list, so the caller
// reports every problem at once; no message quotes a secret.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { asError, TokenTapError } from '../lib/errors.js';

const requireModule = createRequire(import.meta.url);

export interface HostPort {
  host: string;
  port: number;
}

export class ConfigError extends TokenTapError {
  override name = 'ConfigError';
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n  - ${problems.join('\n  - ')}`, 'misconfigured');
  }
}

// C0 and C1 controls, DEL and the Unicode line and paragraph separators: none belongs in an address,
// and a line break in one would reach every file or log line it is written into.
const CONTROL_CHARACTERS = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/;

/** Refuses a listen or connect address with a control character (a newline, a NUL...), naming it by code only. */
function refuseControlCharacters(text: string, what: string): void {
  const found = CONTROL_CHARACTERS.exec(text);
  if (found)
    throw new Error(
      `${what} must not contain control characters (found U+${found[0].codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')} at position ${found.index})`,
    );
}

/** A text safe on one line of a comment or a log: control characters become \\uXXXX. */
export function escapeControlCharacters(text: string): string {
  return text.replace(new RegExp(CONTROL_CHARACTERS.source, 'g'), (character) => `\\u${character.codePointAt(0)!.toString(16).padStart(4, '0')}`);
}

export function parseHostPort(text: string, what: string): HostPort {
  refuseControlCharacters(text, what);
  const match = /^(?:\[([0-9a-fA-F:]+)\]|([^:\s]+)):(\d{1,5})$/.exec(text.trim());
  const port = match ? Number.parseInt(match[3]!, 10) : NaN;
  if (!match || port > 65535) throw new Error(`${what} must be HOST:PORT (for example 127.0.0.1:50051), got "${text}"`);
  return { host: match[1] ?? match[2]!, port };
}

export function formatHostPort({ host, port }: HostPort): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/** An integer setting above 0 (its fallback when unset); a bad value joins `problems`. */
export function positiveInteger(env: NodeJS.ProcessEnv, name: string, fallback: number, problems: string[]): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  if (!/^\d+$/.test(raw) || Number.parseInt(raw, 10) <= 0) {
    problems.push(`${name} must be a positive integer, got "${raw}"`);
    return fallback;
  }
  return Number.parseInt(raw, 10);
}

/** true or false (unset: false); anything else joins `problems`. */
export function readBoolean(env: NodeJS.ProcessEnv, name: string, problems: string[]): boolean {
  const raw = (env[name] ?? '').trim().toLowerCase();
  if (raw === '' || raw === 'false' || raw === '0') return false;
  if (raw === 'true' || raw === '1') return true;
  problems.push(`${name} must be true or false, got "${env[name]}"`);
  return false;
}

/** An integer setting of 0 or more (its fallback when unset); a bad value joins `problems`. */
export function nonNegativeInteger(env: NodeJS.ProcessEnv, name: string, fallback: number, problems: string[]): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  if (!/^\d+$/.test(raw)) {
    problems.push(`${name} must be an integer of 0 or more, got "${raw}"`);
    return fallback;
  }
  return Number.parseInt(raw, 10);
}

/** A Unix domain socket to listen on or connect to (`unix:/path`). */
export interface SocketPath {
  socket: string;
}

/** Where a gRPC server listens: HOST:PORT, or a Unix domain socket. */
export type ListenAddress = HostPort | SocketPath;

// sockaddr_un.sun_path is 108 bytes on Linux, with its NUL.
const MAX_SOCKET_PATH = 107;

export function isSocket(address: ListenAddress): address is SocketPath {
  return 'socket' in address;
}

/** `unix:/path` (made absolute) or HOST:PORT. */
export function parseListenAddress(text: string, what: string): ListenAddress {
  refuseControlCharacters(text, what);
  const trimmed = text.trim();
  if (trimmed.startsWith('unix:')) {
    const raw = trimmed.slice('unix:'.length).replace(/^\/\/(?=\/)/, '');
    if (raw === '') throw new Error(`${what} unix: needs a path, for example unix:/run/token-tap/extproc.sock`);
    const socket = path.resolve(raw);
    if (Buffer.byteLength(socket) > MAX_SOCKET_PATH)
      throw new Error(`${what} socket path is longer than ${MAX_SOCKET_PATH} bytes (the Unix socket limit): ${socket}`);
    return { socket };
  }
  try {
    return parseHostPort(trimmed, what);
  } catch {
    throw new Error(`${what} must be HOST:PORT (for example 127.0.0.1:50051) or unix:/path (for example unix:/run/token-tap/extproc.sock), got "${text}"`);
  }
}

/** As grpc-js takes it: `unix:/path` or HOST:PORT. */
export function formatListenAddress(address: ListenAddress): string {
  return isSocket(address) ? `unix:${address.socket}` : formatHostPort(address);
}

/** Only this machine can reach it: a socket, 127.0.0.0/8, ::1 or localhost. */
export function isLoopbackOnly(address: ListenAddress): boolean {
  if (isSocket(address)) return true;
  const host = address.host.toLowerCase();
  return host === 'localhost' || host === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

/**
 * Reads a YAML (or JSON: JSON is YAML) config file named by `envName`. Parser messages quote the
 * text around an error, which could be a secret someone pasted in: only positions are reported.
 * The YAML library loads only when there is a file to read, off the sidecar's start-up path.
 */
export function readYamlFile(file: string, envName: string, problems: string[]): { root: unknown } | undefined {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    problems.push(`${envName}: cannot read ${file} (${(error as NodeJS.ErrnoException).code ?? 'error'})`);
    return undefined;
  }
  const { parseDocument } = requireModule('yaml') as typeof import('yaml');
  const document = parseDocument(text);
  if (document.errors.length > 0) {
    for (const error of document.errors) {
      const position = error.linePos?.[0];
      problems.push(`${file}: not valid YAML or JSON${position ? ` at line ${position.line}, column ${position.col}` : ''} (${error.code})`);
    }
    return undefined;
  }
  return { root: document.toJS() };
}

/** `parse(text)`, or undefined with the reason it threw added to `problems` (every problem is reported at once). */
export function parseOrNote<T>(text: string, parse: (text: string) => T, problems: string[]): T | undefined {
  try {
    return parse(text);
  } catch (error) {
    problems.push(asError(error).message);
    return undefined;
  }
}

/** Each of `texts` through `parse`; the ones it refuses are left out, their reasons added to `problems`. */
export function parseEach<T>(texts: readonly string[], parse: (text: string) => T, problems: string[]): T[] {
  return texts.flatMap((text) => {
    const parsed = parseOrNote(text, parse, problems);
    return parsed === undefined ? [] : [parsed];
  });
}
