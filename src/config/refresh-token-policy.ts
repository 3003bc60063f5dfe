// An IdP's `refresh_token_policy` in TOKEN_TAP_IDP_CONFIG: limits the vault imposes on the refresh
// tokens it holds where the IdP imposes none (docs/refresh-token-hygiene.md). Durations are a whole
// number and a unit (s, m, h, d). Pure: a schema and a parser; problems name the path and what is
// expected, never the value (a mistyped secret pasted in the wrong field must not reach a log).
//
//   refresh_token_policy:
//     max_age: 90d       # since the interactive login that began the refresh-token chain
//     idle_max: 30d      # no login and no refresh asked by a caller for that long
//     rotate_every: 7d   # refresh proactively when the stored refresh token is older than this
import { zod } from './zod.js';

const UNIT_MS = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;
/** Ten years: past that a limit is no limit, and ms stay well inside a safe integer. */
const MAX_DURATION_MS = 3_650 * UNIT_MS.d;
export const DURATION_RULE = 'a whole number and a unit s, m, h or d (e.g. 30s, 15m, 12h, 90d), above 0 and at most 3650d';

/** "90d" → ms; undefined when it is not a duration by DURATION_RULE. */
export function parseDuration(text: string): number | undefined {
  const match = /^(\d{1,7})([smhd])$/.exec(text.trim());
  if (!match) return undefined;
  const ms = Number(match[1]) * UNIT_MS[match[2] as keyof typeof UNIT_MS];
  return ms > 0 && ms <= MAX_DURATION_MS ? ms : undefined;
}

/** ms → the shortest exact text parseDuration reads back ("90d", "36h", "90s"). */
export function formatDuration(ms: number): string {
  for (const unit of ['d', 'h', 'm'] as const) if (ms % UNIT_MS[unit] === 0) return `${ms / UNIT_MS[unit]}${unit}`;
  return `${Math.round(ms / 1_000)}s`;
}

export interface RefreshTokenPolicy {
  /** Since the chain began (the last interactive login that brought a refresh token). */
  maxAgeMs?: number;
  /** Since the last login or the last refresh a caller asked for (the policy's own rotations do not count). */
  idleMaxMs?: number;
  /** Since the stored refresh token was first seen, or last refreshed at an IdP that does not rotate. */
  rotateEveryMs?: number;
}

/** The schema of an IdP's `refresh_token_policy` (built when a file is checked: config/zod.ts). */
export function refreshTokenPolicySchema() {
  const z = zod();
  const duration = z.string({ error: `must be ${DURATION_RULE}` }).transform((text, context) => {
    const ms = parseDuration(text);
    if (ms === undefined) {
      context.addIssue({ code: 'custom', message: `must be ${DURATION_RULE}` });
      return z.NEVER;
    }
    return ms;
  });

  return z
    .strictObject(
      { max_age: duration.optional(), idle_max: duration.optional(), rotate_every: duration.optional() },
      {
        error: (issue) =>
          issue.code === 'unrecognized_keys'
            ? `unknown field(s) ${issue.keys.map((key) => `"${key}"`).join(', ')} (known: max_age, idle_max, rotate_every)`
            : 'must be a mapping of max_age, idle_max and/or rotate_every',
      },
    )
    .refine((policy) => Object.values(policy).some((value) => value !== undefined), { message: 'names none of max_age, idle_max, rotate_every' })
    .transform(
      (policy): RefreshTokenPolicy => ({
        ...(policy.max_age !== undefined ? { maxAgeMs: policy.max_age } : {}),
        ...(policy.idle_max !== undefined ? { idleMaxMs: policy.idle_max } : {}),
        ...(policy.rotate_every !== undefined ? { rotateEveryMs: policy.rotate_every } : {}),
      }),
    );
}

/** The policy as written in the file (for the report), e.g. { max_age: '90d' }. */
export function describePolicy(policy: RefreshTokenPolicy | undefined): Record<string, string> | null {
  if (!policy) return null;
  const described: Record<string, string> = {};
  if (policy.maxAgeMs !== undefined) described.max_age = formatDuration(policy.maxAgeMs);
  if (policy.idleMaxMs !== undefined) described.idle_max = formatDuration(policy.idleMaxMs);
  if (policy.rotateEveryMs !== undefined) described.rotate_every = formatDuration(policy.rotateEveryMs);
  return described;
}
