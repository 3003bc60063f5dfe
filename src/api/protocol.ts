// The TokenVault service definition, loaded at run time from proto/token_tap/v1/token_vault.proto
// (shipped beside dist/ in the package and the image), and the message shapes as proto-loader
// presents them: snake_case fields, enums as names, int64 as strings, the oneof's name in `user`.
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

export const TOKEN_VAULT_PROTO_DIR = fileURLToPath(new URL('../../../proto/', import.meta.url));
export const TOKEN_VAULT_PROTO = 'token_tap/v1/token_vault.proto';

const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
  includeDirs: [TOKEN_VAULT_PROTO_DIR],
};

export interface Timestamp {
  seconds: string | number;
  nanos: number;
}

// protobufjs defines the well-known types itself, in camelCase, whatever keepCase says.
export type ProtoValue =
  | { nullValue: 'NULL_VALUE' }
  | { numberValue: number }
  | { stringValue: string }
  | { boolValue: boolean }
  | { structValue: ProtoStruct }
  | { listValue: { values: ProtoValue[] } };

export interface ProtoStruct {
  fields: Record<string, ProtoValue>;
}

export type GrantStatusName = 'GRANT_STATUS_UNSPECIFIED' | 'GRANT_STATUS_ACTIVE' | 'GRANT_STATUS_REVOKED';

export interface GrantMessage {
  idp: string;
  subject: string;
  status: GrantStatusName;
  issuer: string;
  client_id: string;
  email: string;
  scope: string[];
  token_type: string;
  access_token: string;
  access_token_expires_at: Timestamp | null;
  id_token: string;
  id_token_expires_at: Timestamp | null;
  has_refresh_token: boolean;
  refresh_token: string;
  refresh_token_expires_at: Timestamp | null;
  id_token_claims: ProtoStruct | null;
  extras: ProtoStruct | null;
  captured_at: Timestamp | null;
  updated_at: Timestamp | null;
  version: string | number;
  verified: boolean;
}

/** A grant without tokens or claims: the proto's GrantSummary, the same fields as in Grant. */
export type GrantSummaryMessage = Pick<
  GrantMessage,
  'idp' | 'subject' | 'status' | 'issuer' | 'client_id' | 'email' | 'scope' | 'has_refresh_token' | 'access_token_expires_at' | 'refresh_token_expires_at' | 'captured_at' | 'updated_at' | 'version' | 'verified'
>;

/** Selects one user of one IdP. */
export interface UserSelector {
  idp: string;
  subject?: string;
  email?: string;
  user?: 'subject' | 'email';
}

export interface GetGrantRequest extends UserSelector {
  refresh_if_expires_within_seconds: number;
  include_refresh_token: boolean;
}

export interface GetGrantResponse {
  grant: GrantMessage;
  refreshed: boolean;
}

export interface ListGrantsRequest {
  idp: string;
  page_size: number;
  page_token: string;
}

export interface ListGrantsResponse {
  grants: GrantSummaryMessage[];
  next_page_token: string;
}

export type RefreshGrantRequest = UserSelector;

export interface RefreshGrantResponse {
  grant: GrantMessage;
  refreshed_by_this_call: boolean;
}

export type RevokeGrantRequest = UserSelector;

export interface RevokeGrantResponse {
  grant: GrantSummaryMessage;
  revoked_at_idp: boolean;
}

export interface DeleteSubjectRequest {
  idp: string;
  subject?: string;
  email?: string;
  user?: 'subject' | 'email';
  revoke_at_idp: boolean;
}

export interface DeleteSubjectResponse {
  deleted: Array<{ idp: string; subject: string }>;
  capture_events_deleted: number;
}

export interface TokenVaultDefinition {
  service: grpc.ServiceDefinition;
  /** A client constructor, for tests, benchmarks and callers written in Node. */
  Client: grpc.ServiceClientConstructor;
}

let cached: TokenVaultDefinition | undefined;

export function loadTokenVault(): TokenVaultDefinition {
  if (cached) return cached;
  const packageDefinition = protoLoader.loadSync(TOKEN_VAULT_PROTO, LOADER_OPTIONS);
  const loaded = grpc.loadPackageDefinition(packageDefinition) as unknown as {
    token_tap: { v1: { TokenVault: grpc.ServiceClientConstructor } };
  };
  const Client = loaded.token_tap.v1.TokenVault;
  cached = { service: Client.service, Client };
  return cached;
}
