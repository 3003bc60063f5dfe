// JSON logs with pino. The code never passes token material to the logger; redaction is the
// second line of defence for any object that might carry a token or credential.
import { pino, type DestinationStream, type Logger, type LevelWithSilent } from 'pino';

const SECRET_FIELDS = [
  'access_token',
  'refresh_token',
  'id_token',
  'accessToken',
  'refreshToken',
  'idToken',
  'client_secret',
  'clientSecret',
  'authorization',
  'password',
  'tokens',
  'keys',
  'databaseUrl',
];

export const REDACT_PATHS = [...SECRET_FIELDS, ...SECRET_FIELDS.map((field) => `*.${field}`), 'headers.authorization', 'headers.cookie'];

export function createLogger(level: LevelWithSilent = 'info', destination?: DestinationStream): Logger {
  const options = {
    level,
    base: { service: 'token-tap' },
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
  };
  return destination ? pino(options, destination) : pino(options);
}
