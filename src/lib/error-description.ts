// What an error says that is safe to store and log: its code and its class name, never its message
// (which may quote a value: a token, a row, a path a user named).

/** What an error says without its message: its code (SQLSTATE or errno), if any. */
export function errorCode(error: unknown): string | undefined {
  const code = (error as { code?: unknown })?.code;
  return typeof code === 'string' ? code : undefined;
}

/** An error's class name, safe to store and log: letters and digits only, bounded. */
export function errorName(error: unknown): string {
  const name = (error as Error)?.name;
  return typeof name === 'string' && /^[A-Za-z][A-Za-z0-9_]{0,59}$/.test(name) ? name : 'Error';
}

/**
 * Message and code of an error from the file system or the network (errno errors), for logs and
 * messages: their messages name paths and addresses, never a secret. Not for errors that may quote
 * values (Postgres's, a parser's): use errorCode and errorName there.
 */
export function errorFields(error: unknown): { message: string; code?: string } {
  const code = errorCode(error);
  return { message: (error as Error)?.message ?? String(error), ...(code ? { code } : {}) };
}
