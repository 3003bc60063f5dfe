// Why a vault operation did not happen, in terms a caller can act on. The API turns the outcome
// into a gRPC status; the CLI into an exit code. Messages never contain token material.
/** The outcomes a vault operation can end in besides success; the API audits them under the same names. */
export type VaultOutcome = 'invalid_argument' | 'not_found' | 'failed_precondition' | 'unavailable';

export class VaultError extends Error {
  override name = 'VaultError';
  constructor(
    message: string,
    readonly outcome: VaultOutcome,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** What an error says without its message (which may quote a value): its code (SQLSTATE or errno), if any. */
export function errorCode(error: unknown): string | undefined {
  const code = (error as { code?: unknown })?.code;
  return typeof code === 'string' ? code : undefined;
}

export function grantNotFound(idp: string, subject: string): VaultError {
  return new VaultError(`no grant stored for IdP "${idp}" and subject "${subject}"`, 'not_found');
}

/** Postgres refused the values themselves (data exception, class 22; constraint violation, 23): retrying cannot help. */
export function isRefusedByPostgres(error: unknown): boolean {
  return /^(22|23)[0-9A-Z]{3}$/.test(errorCode(error) ?? '');
}
