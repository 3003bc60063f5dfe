// One error model (issue 21). An error token-tap throws on purpose is a TokenTapError: its
// `outcome` says what went wrong in terms a caller can act on, and only the edges turn it into
// something else, each in one function: the TokenVault API into a gRPC status (api/errors.ts), the
// Okta hook into an HTTP status (hook/server.ts), the CLI into an exit code (cli/main.ts).
// Subclasses are named after what went wrong (ConfigError, SpoolLockedError, DecryptError, ...)
// and live beside the code that throws them.

/**
 * What kind of failure an error is. A small closed set, named as gRPC names its codes (the API and
 * its audit rows use the same words), plus `misconfigured`, which only a process start meets.
 */
export type Outcome =
  /** The input is wrong (a field, a flag, a file's text): fix it and ask again. */
  | 'invalid_argument'
  /** What was asked for does not exist (a grant, a segment). */
  | 'not_found'
  /** The state refuses it (a revoked grant, a key the ring lacks, a newer schema): change the state first. */
  | 'failed_precondition'
  | 'unauthenticated'
  | 'permission_denied'
  /** A dependency (Postgres, an IdP, a lock held by another process) cannot serve now: retry later. */
  | 'unavailable'
  /** The settings are wrong: the process cannot start with them. */
  | 'misconfigured'
  /** A bug or a failure nobody planned for: the log has the details. */
  | 'internal';

export interface TokenTapErrorOptions {
  cause?: unknown;
  /**
   * Whether the message may be sent to a remote caller (a gRPC client): it names fields, IdPs and
   * subjects, never a secret or the value it refused. Default false: the caller gets a generic answer.
   */
  exposable?: boolean;
}

export class TokenTapError extends Error {
  override name = 'TokenTapError';
  readonly outcome: Outcome;
  readonly exposable: boolean;
  constructor(message: string, outcome: Outcome, options: TokenTapErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.outcome = outcome;
    this.exposable = options.exposable ?? false;
  }
}

/** The outcome of any thrown value: a TokenTapError's own, `internal` for anything else. */
export function outcomeOf(error: unknown): Outcome {
  return error instanceof TokenTapError ? error.outcome : 'internal';
}

/**
 * A thrown value as an Error, to read its message: an Error as it is, anything else (a string, an
 * object with a message) wrapped. For logs use describeError, which leaves out what may quote a value.
 */
export function asError(thrown: unknown): Error {
  if (thrown instanceof Error) return thrown;
  if (typeof thrown === 'object' && thrown !== null && typeof (thrown as { message?: unknown }).message === 'string') {
    return new Error((thrown as { message: string }).message, { cause: thrown });
  }
  return new Error(String(thrown), { cause: thrown });
}
