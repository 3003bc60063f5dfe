// The refresh-token report: per IdP, what the vault holds and what the IdP was seen doing, the policy
// as configured and what it did in the last 24 hours. Pure: figures in (store/refresh-token-report.ts),
// lines out, for `token-tap report` (text or JSON) and the gauges on /metrics (policy/metrics.ts).
import { describePolicy, type RefreshTokenPolicy } from '../config/refresh-token-policy.js';
import type { IdpFigures, PolicyActionCount } from '../store/refresh-token-report.js';

export interface ReportLine {
  idp: string;
  grants: number;
  active: number;
  with_refresh_token: number;
  /** Seen from refresh answers: true (a new refresh token), false (none, or the same), null (no refresh seen yet). */
  rotates_refresh_tokens: boolean | null;
  refresh_token_expiry_known: number;
  oldest_refresh_token_age_seconds: number | null;
  /** Since the oldest refresh-token chain began, as the policy's max_age counts it. */
  oldest_chain_age_seconds: number | null;
  verified: number;
  rotations_seen: number;
  last_capture_at: string | null;
  /** As written in TOKEN_TAP_IDP_CONFIG, e.g. { max_age: '90d' }; null: no policy. */
  policy: Record<string, string> | null;
  /** The policy's actions of the last 24 h: action → outcome → count. */
  policy_actions_24h: Record<string, Record<string, number>>;
}

const EMPTY: Omit<IdpFigures, 'idp'> = {
  grants: 0,
  active: 0,
  withRefreshToken: 0,
  rotatesRefreshTokens: null,
  refreshTokenExpiryKnown: 0,
  oldestRefreshTokenAgeSeconds: null,
  oldestChainAgeSeconds: null,
  verified: 0,
  rotationsSeen: 0,
  lastCaptureAt: null,
};

/** One line per IdP that has grants, a policy or a client in the IdP file (`configured`), by name. */
export function buildReport(
  figures: readonly IdpFigures[],
  actions: readonly PolicyActionCount[],
  policies: ReadonlyMap<string, RefreshTokenPolicy>,
  configured: Iterable<string> = [],
): ReportLine[] {
  const byIdp = new Map(figures.map((entry) => [entry.idp, entry]));
  const names = [...new Set([...byIdp.keys(), ...policies.keys(), ...configured])].sort();
  return names.map((idp) => {
    const found = byIdp.get(idp) ?? { idp, ...EMPTY };
    const done: Record<string, Record<string, number>> = {};
    for (const entry of actions) if (entry.idp === idp) (done[entry.action] ??= {})[entry.outcome] = entry.count;
    return {
      idp,
      grants: found.grants,
      active: found.active,
      with_refresh_token: found.withRefreshToken,
      rotates_refresh_tokens: found.rotatesRefreshTokens,
      refresh_token_expiry_known: found.refreshTokenExpiryKnown,
      oldest_refresh_token_age_seconds: found.oldestRefreshTokenAgeSeconds === null ? null : Math.floor(found.oldestRefreshTokenAgeSeconds),
      oldest_chain_age_seconds: found.oldestChainAgeSeconds === null ? null : Math.floor(found.oldestChainAgeSeconds),
      verified: found.verified,
      rotations_seen: found.rotationsSeen,
      last_capture_at: found.lastCaptureAt ? found.lastCaptureAt.toISOString() : null,
      policy: describePolicy(policies.get(idp)),
      policy_actions_24h: done,
    };
  });
}

const describeRotation = (rotates: boolean | null) => (rotates === null ? 'unknown' : rotates ? 'yes' : 'no');

/** One line of text per IdP: `name key=value ...`, values without spaces. */
export function formatReportText(lines: readonly ReportLine[]): string {
  if (lines.length === 0) return 'no IdP has grants or a policy\n';
  return lines
    .map((line) => {
      const policy = line.policy
        ? Object.entries(line.policy)
            .map(([key, value]) => `${key}:${value}`)
            .join(',')
        : 'none';
      const actions = Object.entries(line.policy_actions_24h).flatMap(([action, outcomes]) =>
        Object.entries(outcomes).map(([outcome, count]) => `${action}/${outcome}:${count}`),
      );
      const fields = [
        `grants=${line.grants}`,
        `active=${line.active}`,
        `with_refresh_token=${line.with_refresh_token}`,
        `rotates_refresh_tokens=${describeRotation(line.rotates_refresh_tokens)}`,
        `refresh_token_expiry_known=${line.refresh_token_expiry_known}`,
        `oldest_refresh_token_age=${line.oldest_refresh_token_age_seconds === null ? '-' : `${line.oldest_refresh_token_age_seconds}s`}`,
        `oldest_chain_age=${line.oldest_chain_age_seconds === null ? '-' : `${line.oldest_chain_age_seconds}s`}`,
        `verified=${line.verified}`,
        `rotations_seen=${line.rotations_seen}`,
        `last_capture_at=${line.last_capture_at ?? '-'}`,
        `policy=${policy}`,
        `policy_actions_24h=${actions.length > 0 ? actions.join(',') : 'none'}`,
      ];
      return `${line.idp} ${fields.join(' ')}`;
    })
    .join('\n')
    .concat('\n');
}
