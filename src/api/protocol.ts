// The TokenVault service definition, loaded at run time from proto/token_tap/v1/token_vault.proto
// (shipped beside dist/ in the package and the image). The message types are generated from the
// same proto at build time (scripts/generate-proto-types.js, into generated/token-vault/, type-only
// imports): `X` is a message as the server writes it (every field optional), `X__Output` as this
// loader decodes it (LOADER_OPTIONS: snake_case fields, enums as names, int64 as strings, defaults
// set, the oneof's name in `user`). The well-known types (Struct, Value, Timestamp) keep protobufjs's
// camelCase names whatever keepCase says.
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import type { GetGrantRequest__Output } from '../../generated/token-vault/token_tap/v1/GetGrantRequest.js';
import type { Grant } from '../../generated/token-vault/token_tap/v1/Grant.js';
import type { GrantSummary } from '../../generated/token-vault/token_tap/v1/GrantSummary.js';

export type { Struct } from '../../generated/token-vault/google/protobuf/Struct.js';
export type { Timestamp } from '../../generated/token-vault/google/protobuf/Timestamp.js';
export type { Value } from '../../generated/token-vault/google/protobuf/Value.js';
export type { GrantStatus__Output } from '../../generated/token-vault/token_tap/v1/GrantStatus.js';
export type { GetGrantRequest__Output } from '../../generated/token-vault/token_tap/v1/GetGrantRequest.js';
export type { GetGrantResponse } from '../../generated/token-vault/token_tap/v1/GetGrantResponse.js';
export type { ListGrantsRequest__Output } from '../../generated/token-vault/token_tap/v1/ListGrantsRequest.js';
export type { ListGrantsResponse } from '../../generated/token-vault/token_tap/v1/ListGrantsResponse.js';
export type { RefreshGrantRequest__Output } from '../../generated/token-vault/token_tap/v1/RefreshGrantRequest.js';
export type { RefreshGrantResponse } from '../../generated/token-vault/token_tap/v1/RefreshGrantResponse.js';
export type { RevokeGrantRequest__Output } from '../../generated/token-vault/token_tap/v1/RevokeGrantRequest.js';
export type { RevokeGrantResponse } from '../../generated/token-vault/token_tap/v1/RevokeGrantResponse.js';
export type { DeleteSubjectRequest__Output } from '../../generated/token-vault/token_tap/v1/DeleteSubjectRequest.js';
export type { DeleteSubjectResponse } from '../../generated/token-vault/token_tap/v1/DeleteSubjectResponse.js';

export const TOKEN_VAULT_PROTO_DIR = fileURLToPath(new URL('../../../proto/', import.meta.url));
export const TOKEN_VAULT_PROTO = 'token_tap/v1/token_vault.proto';

/** The generated types follow these options (scripts/generate-proto-types.js; a unit test keeps them equal). */
export const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
  includeDirs: [TOKEN_VAULT_PROTO_DIR],
};

/** A Grant as wire.ts writes it: every field set, none forgotten. */
export type GrantMessage = Required<Grant>;

/** A grant without tokens or claims (the proto's GrantSummary), every field set. */
export type GrantSummaryMessage = Required<GrantSummary>;

/** Selects one user of one IdP: the fields every request that names a user shares (oneof `user`). */
export type UserSelector = Pick<GetGrantRequest__Output, 'idp' | 'subject' | 'email' | 'user'>;

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
