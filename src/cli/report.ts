// `token-tap report [--json]`: per IdP, what the vault holds and what the IdP was seen doing with
// refresh tokens, the refresh-token policy as configured and its actions of the last 24 hours
// (docs/refresh-token-hygiene.md). Reads DATABASE_URL and, for the policies, TOKEN_TAP_IDP_CONFIG;
// opens no token, so it needs no key ring and writes no access_events row.
import type { Command } from 'commander';
import { loadIdpConfig } from '../config/idp-file.js';
import { ConfigError } from '../config/values.js';
import { buildReport, formatReportText } from '../policy/report.js';
import { readIdpFigures, readPolicyActions } from '../store/refresh-token-report.js';
import { connect, explainMissingSchema } from './vault.js';

async function report(options: { json: boolean }): Promise<void> {
  const problems: string[] = [];
  const idps = loadIdpConfig(process.env, problems);
  const { pool } = connect({});
  try {
    if (problems.length > 0) throw new ConfigError(problems);
    const configured = [...idps.clients.keys(), ...idps.verification.keys()];
    const lines = buildReport(await readIdpFigures(pool), await readPolicyActions(pool), idps.policies, configured);
    process.stdout.write(options.json ? `${JSON.stringify(lines, null, 2)}\n` : formatReportText(lines));
  } catch (error) {
    explainMissingSchema(error);
  } finally {
    await pool.end();
  }
}

export function registerReportCommand(program: Command): void {
  program
    .command('report')
    .description(
      'Per IdP: grants, active, with a refresh token, whether refresh answers rotate refresh tokens (yes, no, unknown), refresh tokens with a known expiry, ' +
        'the oldest refresh token, verified grants, the last login captured, the refresh_token_policy as configured and its actions of the last 24 h. ' +
        'Reads DATABASE_URL and TOKEN_TAP_IDP_CONFIG; never a token.',
    )
    .option('--json', 'print a JSON array, an object per IdP', false)
    .action(report);
}
