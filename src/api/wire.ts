// Vault records → TokenVault messages, and back for clients. Timestamps go through google-protobuf's
// well-known Timestamp (its fromDate/toDate are the canonical seconds + nanos conversion). Struct
// is built directly in proto-loader's object shape: google-protobuf's Struct objects have another
// shape (fieldsMap arrays), so converting through them would be a second conversion, not a saving.
import { createRequire } from 'node:module';
import { withoutSecretFields } from '../capture/secret-fields.js';
import type { GrantSummaryRecord } from '../store/grant-listing.js';
import type { GrantRecord } from '../store/grants.js';
import type { GrantMessage, GrantStatus__Output, GrantSummaryMessage, Struct, Timestamp, Value } from './protocol.js';

type TimestampClass = typeof import('google-protobuf/google/protobuf/timestamp_pb.js').Timestamp;

const require = createRequire(import.meta.url);
let timestampClass: TimestampClass | undefined;

// google-protobuf takes ~30 ms to load; the sidecar loads it after it is listening (preloadWire),
// not on its start-up path.
function TimestampType(): TimestampClass {
  timestampClass ??= (require('google-protobuf/google/protobuf/timestamp_pb.js') as { Timestamp: TimestampClass }).Timestamp;
  return timestampClass;
}

export function preloadWire(): void {
  TimestampType();
}

export function toTimestamp(date: Date | null | undefined): Timestamp | null {
  return date ? TimestampType().fromDate(date).toObject() : null;
}

export function fromTimestamp(timestamp: Timestamp | null | undefined): Date | null {
  if (!timestamp) return null;
  const Type = TimestampType();
  return new Type()
    .setSeconds(Number(timestamp.seconds))
    .setNanos(timestamp.nanos ?? 0)
    .toDate();
}

export function toProtoValue(value: unknown): Value {
  if (value === null || value === undefined) return { nullValue: 'NULL_VALUE' };
  if (typeof value === 'number') return { numberValue: value };
  if (typeof value === 'string') return { stringValue: value };
  if (typeof value === 'boolean') return { boolValue: value };
  if (typeof value === 'bigint') return { stringValue: value.toString() };
  if (Array.isArray(value)) return { listValue: { values: value.map(toProtoValue) } };
  if (typeof value === 'object') return { structValue: toProtoStruct(value as Record<string, unknown>) };
  return { nullValue: 'NULL_VALUE' };
}

export function toProtoStruct(object: Record<string, unknown>): Struct {
  return { fields: Object.fromEntries(Object.entries(object).map(([key, value]) => [key, toProtoValue(value)])) };
}

export function fromProtoValue(value: Value | undefined): unknown {
  if (!value) return null;
  // proto-loader names the member that is set (oneofs: true); without it, look for the member.
  const kind = value.kind;
  if (kind) return fromProtoValue({ [kind]: value[kind] });
  if ('numberValue' in value) return value.numberValue;
  if ('stringValue' in value) return value.stringValue;
  if ('boolValue' in value) return value.boolValue;
  if ('structValue' in value) return fromProtoStruct(value.structValue);
  if ('listValue' in value) return (value.listValue?.values ?? []).map(fromProtoValue);
  return null;
}

export function fromProtoStruct(struct: Struct | null | undefined): Record<string, unknown> | null {
  if (!struct) return null;
  return Object.fromEntries(Object.entries(struct.fields ?? {}).map(([key, value]) => [key, fromProtoValue(value)]));
}

function statusName(status: 'active' | 'revoked'): GrantStatus__Output {
  return status === 'active' ? 'GRANT_STATUS_ACTIVE' : 'GRANT_STATUS_REVOKED';
}

export interface GrantDisclosure {
  /** Access and id token, claims and extras. */
  tokens: boolean;
  /**
   * The refresh token, and the extras whole. Without it the extras lose every field named like a
   * token or a secret, at any depth (capture/secret-fields.ts): an IdP may put a refresh token
   * there (Slack's authed_user.refresh_token).
   */
  refreshToken: boolean;
}

export function grantMessage(grant: GrantRecord, disclose: GrantDisclosure): GrantMessage {
  // The summary fields, then what only a Grant carries: tokens and claims, as far as disclosed.
  return {
    ...summaryMessage(summaryOfGrant(grant)),
    token_type: grant.tokenType ?? '',
    access_token: disclose.tokens ? (grant.accessToken ?? '') : '',
    id_token: disclose.tokens ? (grant.idToken ?? '') : '',
    id_token_expires_at: toTimestamp(grant.idTokenExpiresAt),
    refresh_token: disclose.tokens && disclose.refreshToken ? (grant.refreshToken ?? '') : '',
    id_token_claims: disclose.tokens && grant.claims ? toProtoStruct(grant.claims) : null,
    extras: disclose.tokens ? toProtoStruct(disclose.refreshToken ? grant.extras : withoutSecretFields(grant.extras)) : null,
  };
}

export function summaryMessage(summary: GrantSummaryRecord): GrantSummaryMessage {
  return {
    idp: summary.idp,
    subject: summary.subject,
    status: statusName(summary.status),
    issuer: summary.issuer ?? '',
    client_id: summary.clientId ?? '',
    email: summary.email ?? '',
    scope: summary.scope,
    has_refresh_token: summary.hasRefreshToken,
    access_token_expires_at: toTimestamp(summary.accessTokenExpiresAt),
    refresh_token_expires_at: toTimestamp(summary.refreshTokenExpiresAt),
    captured_at: toTimestamp(summary.capturedAt),
    updated_at: toTimestamp(summary.updatedAt),
    version: String(summary.version),
    verified: summary.verified,
  };
}

export function summaryOfGrant(grant: GrantRecord): GrantSummaryRecord {
  return {
    idp: grant.idp,
    subject: grant.subject,
    status: grant.status,
    issuer: grant.issuer,
    clientId: grant.clientId,
    email: grant.email,
    scope: grant.scope,
    hasRefreshToken: grant.refreshToken !== null,
    accessTokenExpiresAt: grant.accessTokenExpiresAt,
    refreshTokenExpiresAt: grant.refreshTokenExpiresAt,
    capturedAt: grant.capturedAt,
    updatedAt: grant.updatedAt,
    version: grant.version,
    verified: grant.verified,
  };
}
