// The IdP token-response fixtures in test/fixtures/idps/ (see its README for sources).
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export interface FixtureCase {
  name: string;
  grantType: string;
  status: number;
  headers: Record<string, string>;
  body: string;
  expect: {
    outcome: 'stored' | 'idp_error';
    accessToken: string | null;
    refreshToken: string | null;
    idToken: string | null;
    subject: string | null;
    email: string | null;
    expiresIn: number | null;
    tokenType: string | null;
    scope: string[];
    errorCode: string | null;
  };
}

export interface IdpFixture {
  idp: string;
  displayName: string;
  docs: string[];
  protocol: 'oauth2' | 'oidc';
  userIdentifiedBy: string;
  userinfoUrl: string | null;
  cases: FixtureCase[];
}

export const FIXTURE_DIR = fileURLToPath(new URL('../../../test/fixtures/idps/', import.meta.url));

export function loadIdpFixtures(): IdpFixture[] {
  return readdirSync(FIXTURE_DIR)
    .filter((file) => file.endsWith('.json'))
    .sort()
    .map((file) => JSON.parse(readFileSync(`${FIXTURE_DIR}${file}`, 'utf8')) as IdpFixture);
}
