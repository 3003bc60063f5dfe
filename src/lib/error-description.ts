// What an error says that is safe to store and log. errorCode and errorName never quote a value;
// errorFields keeps the message of errno errors (paths, addresses); describeError is for every
// log line about a thrown value, and leaves out what may quote a value or a secret.

/** What an error says without its message: its code (SQLSTATE or errno), if any. */
export function errorCode(error: unknown): string | undefined {
  const code = fieldOf(error, 'code');
  return typeof code === 'string' ? code : undefined;
}

/** An error's class name, safe to store and log: letters and digits only, bounded. */
export function errorName(error: unknown): string {
  const name = fieldOf(error, 'name');
  return typeof name === 'string' && /^[A-Za-z][A-Za-z0-9_]{0,59}$/.test(name) ? name : 'Error';
}

/**
 * Message and code of an error from the file system or the network (errno errors), for logs and
 * messages: their messages name paths and addresses, never a secret. Not for errors that may quote
 * values (Postgres's, a parser's): use describeError there.
 */
export function errorFields(error: unknown): { message: string; code?: string } {
  const code = errorCode(error);
  const message = fieldOf(error, 'message');
  return { message: typeof message === 'string' ? message : String(error), ...(code ? { code } : {}) };
}

/** What describeError gives a log line. */
export interface ErrorDescription {
  name: string;
  message: string;
  /** SQLSTATE, errno code, or our own. */
  code?: string;
  /** Postgres's names of what a statement hit: schema names, never a row's values. */
  table?: string;
  column?: string;
  constraint?: string;
  cause?: ErrorDescription;
}

const MAX_MESSAGE = 500;
const MAX_CAUSES = 3;
const SQLSTATE = /^[0-9A-Z]{5}$/;

/**
 * A thrown value, described for a log line: name, code, message and the chain of causes, each
 * bounded. Never a field an error carries besides those: not a request or response body, not a
 * token, not Postgres's `detail`, `where`, `hint` or query parameters (which hold a row's values).
 * Messages that quote the input they failed on are withheld: Postgres's data exceptions (SQLSTATE
 * class 22: `invalid input syntax for type uuid: "..."`) and SyntaxErrors (JSON.parse quotes the
 * text it read, which may be a token response).
 */
export function describeError(error: unknown): ErrorDescription {
  return describe(error, 0);
}

function describe(error: unknown, depth: number): ErrorDescription {
  if (typeof error !== 'object' || error === null) {
    return { name: 'Error', message: typeof error === 'string' ? bounded(error) : `a thrown ${error === null ? 'null' : typeof error}` };
  }
  const name = errorName(error);
  const code = errorCode(error);
  const description: ErrorDescription = { name, message: safeMessage(error, name, code), ...(code ? { code } : {}) };
  if (isPostgresError(error, code)) {
    for (const field of ['table', 'column', 'constraint'] as const) {
      const value = fieldOf(error, field);
      if (typeof value === 'string' && value !== '') description[field] = bounded(value);
    }
  }
  const cause = fieldOf(error, 'cause');
  // Only an Error cause: some libraries put the response body they refused there.
  if (cause instanceof Error && depth < MAX_CAUSES) description.cause = describe(cause, depth + 1);
  return description;
}

function safeMessage(error: object, name: string, code: string | undefined): string {
  if (isPostgresError(error, code) && code!.startsWith('22'))
    return `Postgres refused a value (SQLSTATE ${code}; its message quotes the value and is withheld)`;
  if (name === 'SyntaxError') return 'the text cannot be parsed (the message quotes it and is withheld)';
  const message = fieldOf(error, 'message');
  if (typeof message !== 'string') return `a thrown ${error instanceof Error ? name : 'object'} without a message`;
  return bounded(message);
}

/** An error of the Postgres server (pg's DatabaseError, PGlite's): a SQLSTATE and a severity. */
function isPostgresError(error: object, code: string | undefined): boolean {
  return code !== undefined && SQLSTATE.test(code) && typeof fieldOf(error, 'severity') === 'string';
}

function bounded(text: string): string {
  return text.length > MAX_MESSAGE ? `${text.slice(0, MAX_MESSAGE)}…` : text;
}

function fieldOf(value: unknown, field: string): unknown {
  return typeof value === 'object' && value !== null ? (value as Record<string, unknown>)[field] : undefined;
}
