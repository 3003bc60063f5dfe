// Errors become gRPC statuses here and nowhere else, by their outcome (lib/errors.ts). A refusal's
// message is answered as it is only when the error says it may be (`exposable`: it names fields,
// IdPs and subjects, never a secret); anything else is answered with a generic message and logged.
import * as grpc from '@grpc/grpc-js';
import { describeError, errorCode } from '../lib/error-description.js';
import { TokenTapError } from '../lib/errors.js';
import type { AccessOutcome } from '../store/access-events.js';
import { isPostgresUnavailable } from '../store/pool.js';
import { AccessDenied } from './auth.js';

const GRPC_STATUS: Record<AccessOutcome, grpc.status> = {
  ok: grpc.status.OK,
  cancelled: grpc.status.CANCELLED,
  unauthenticated: grpc.status.UNAUTHENTICATED,
  permission_denied: grpc.status.PERMISSION_DENIED,
  invalid_argument: grpc.status.INVALID_ARGUMENT,
  not_found: grpc.status.NOT_FOUND,
  failed_precondition: grpc.status.FAILED_PRECONDITION,
  unavailable: grpc.status.UNAVAILABLE,
  // Settings the sidecar cannot use: not the caller's fault, nor worth retrying at once.
  misconfigured: grpc.status.FAILED_PRECONDITION,
  internal: grpc.status.INTERNAL,
};

/** The gRPC status a call answers with, from the outcome its audit row records. */
export function grpcStatusOf(outcome: AccessOutcome): grpc.status {
  return GRPC_STATUS[outcome];
}

/** What a failed call answers and audits. */
export interface Refusal {
  outcome: AccessOutcome;
  /** Sent to the caller. */
  message: string;
  /** Written to the audit row. */
  detail: string;
  /** Nobody planned for it: the caller is told to read the log, so log it. */
  unexpected: boolean;
}

/** How a call that threw `error` is answered and audited. */
export function refusalOf(error: unknown): Refusal {
  if (error instanceof TokenTapError && error.exposable) {
    return { outcome: error.outcome, message: error.message, detail: error instanceof AccessDenied ? error.detail : error.message, unexpected: false };
  }
  if (isPostgresUnavailable(error)) {
    return {
      outcome: 'unavailable',
      message: 'Postgres cannot be reached; try again',
      detail: `Postgres unavailable (${errorCode(error)})`,
      unexpected: false,
    };
  }
  return { outcome: 'internal', message: 'internal error; the sidecar log has the details', detail: describeError(error).message, unexpected: true };
}
