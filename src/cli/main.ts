// The `token-tap` command line. Each command checks its input, reports every problem at once,
// and exits non-zero with a message that says what to do.
// First: pg loaded before anything imports it, so that it does not load undici (lib/pg-preload.ts).
import '../lib/pg-preload.js';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { Command, Option } from 'commander';
import { loadSidecarConfig, type SidecarFlags } from '../config/sidecar.js';
import { ALLOW_REMOTE_EXTPROC, API_LISTEN, EXCHANGE_CONFIG, EXCHANGE_LISTEN, EXTPROC_TLS, HOOK_CONFIG, HOOK_LISTEN, LISTEN, LOG_LEVEL } from '../config/settings.js';
import { formatHostPort, isLoopbackOnly, parseHostPort, parseListenAddress, type HostPort, type ListenAddress, parseEach, parseOrNote } from '../config/values.js';
import type { Cidr, IdpRoute, ProcessingMode, ProfileRoute, RateLimit } from '../envoyconfig/render.js';
import { ENVOY_READY_PATH, ENVOY_READY_PORT } from '../contract.js';
import { startSidecar } from '../sidecar.js';
import { MigrationAbortedError } from '../store/migrate.js';
import { getGrant } from '../operations/get.js';
import { grantToJson, pendingToJson } from './grant-json.js';
import { audited, registerVaultCommands } from './vault.js';
import { registerCaptureCommands } from './captures.js';
import { registerKeyCommands } from './keys.js';
import { registerReportCommand } from './report.js';
import { injectedFault } from './refresh-fault.js';
import { createLogger } from '../ops/log.js';
import { createMetrics } from '../ops/metrics.js';
import { asError, type Outcome, outcomeOf, TokenTapError } from '../lib/errors.js';

/** The command line is wrong (a flag, an argument, a missing dev dependency); the message says what to do. */
export class UsageError extends TokenTapError {
  override name = 'UsageError';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, 'invalid_argument', options);
  }
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

async function serve(options: SidecarFlags): Promise<void> {
  const config = loadSidecarConfig(process.env, options);
  const logger = createLogger(config.logLevel);
  // Listening before the start: ext_proc is served (and captures spooled) while the start still
  // waits on Postgres (the schema migration), and a signal then must not kill the process with
  // the default handler. It stops the sidecar as soon as the start is done; a migration waiting for
  // a lock then stops waiting (startAborted), so the stop is not held until the kubelet's SIGKILL.
  let starting = true;
  const startAborted = new AbortController();
  let stopAsked: () => void = () => undefined;
  const stopped = new Promise<void>((resolve) => (stopAsked = resolve));
  // A second signal meets the default handler and ends the process at once.
  const stop = (signal: NodeJS.Signals) => {
    logger.info({ signal, graceMs: config.shutdownGraceMs }, starting ? 'stopping once the start is done' : 'stopping');
    process.off('SIGINT', stop).off('SIGTERM', stop);
    stopAsked();
    if (starting) startAborted.abort();
  };
  process.on('SIGINT', stop).on('SIGTERM', stop);
  let sidecar: Awaited<ReturnType<typeof startSidecar>>;
  try {
    // The test-only fault hook, handed in only under NODE_ENV=test (config refuses it otherwise too).
    const fault = process.env.NODE_ENV === 'test' ? config.vault.faultInjection : undefined;
    sidecar = await startSidecar(config, { logger, metrics: createMetrics({ defaultMetrics: true, gcMetrics: config.gcMetrics }), signal: startAborted.signal, ...(fault ? { afterRefreshAnswerDurable: injectedFault(fault, logger) } : {}) });
  } catch (error) {
    process.off('SIGINT', stop).off('SIGTERM', stop);
    if (error instanceof MigrationAbortedError && startAborted.signal.aborted) {
      // Asked to stop: what was captured meanwhile is in the spool, for the next start.
      logger.info({ reason: error.message }, 'stopped during the start');
      return;
    }
    throw error;
  } finally {
    starting = false;
  }
  // A sidecar that cannot go on (its spool stopped) stops too, and exits 1 for its supervisor to see.
  const failure = await Promise.race([stopped.then(() => undefined), sidecar.failed]);
  if (failure !== undefined) {
    process.off('SIGINT', stop).off('SIGTERM', stop);
    logger.fatal({ failure }, 'stopping: the sidecar cannot go on');
  }
  await sidecar.close(config.shutdownGraceMs);
  logger.info('stopped');
  // Exit (0, or 1 after a failure) even if a socket to a dead Postgres still holds the event loop open.
  setTimeout(() => process.exit(process.exitCode ?? 0), 1_000).unref();
  if (failure !== undefined) throw new Error(failure);
}

interface EnvoyConfigFlags {
  idp: string[];
  userinfo: string[];
  userinfoSubject: string[];
  listen: string;
  sidecar: string;
  admin: string;
  ready: string;
  mode: ProcessingMode;
  messageTimeoutMs?: string;
  sidecarMaxStreams?: string;
  upstreamCa?: string;
  tlsCert?: string;
  tlsKey?: string;
  oktaHook?: string;
  oktaHookRateLimit?: string;
  xffTrustedHops?: string;
  sidecarTlsCert?: string;
  sidecarTlsKey?: string;
  sidecarCa?: string;
  tokenRateLimit?: string;
  allowSource: string[];
}

async function envoyConfig(options: EnvoyConfigFlags): Promise<void> {
  // Loaded here, not at start: the YAML library is only needed by this command.
  const { parseCidr, parseHookRateLimit, parseIdpFlag, parseProfileFlag, parseRateLimit, renderEnvoyYaml } = await import('../envoyconfig/render.js');
  const problems: string[] = [];
  const idps: IdpRoute[] = parseEach(options.idp, parseIdpFlag, problems);
  const subjectFields = new Map<string, string>();
  for (const flag of options.userinfoSubject) {
    const separator = flag.indexOf('=');
    if (separator <= 0) problems.push(`--userinfo-subject must be NAME=FIELD (for example github=id or x=data.id), got "${flag}"`);
    else subjectFields.set(flag.slice(0, separator), flag.slice(separator + 1));
  }
  const profiles: ProfileRoute[] = parseEach(options.userinfo, (flag) => parseProfileFlag(flag, subjectFields), problems);
  for (const name of subjectFields.keys()) {
    if (!profiles.some((profile) => profile.name === name)) problems.push(`--userinfo-subject "${name}" has no --userinfo ${name}=URL`);
  }
  if (options.idp.length === 0) problems.push('at least one --idp NAME=URL is required');
  const oktaHook = options.oktaHook === undefined ? undefined : parseOrNote(options.oktaHook, (text) => parseHostPort(text, '--okta-hook'), problems);
  const oktaHookRateLimit = options.oktaHookRateLimit === undefined ? undefined : parseOrNote(options.oktaHookRateLimit, parseHookRateLimit, problems);
  if (options.oktaHookRateLimit !== undefined && options.oktaHook === undefined) problems.push('--okta-hook-rate-limit limits the route --okta-hook adds: give --okta-hook too');
  const xffTrustedHops = options.xffTrustedHops === undefined ? undefined : Number(options.xffTrustedHops);
  if (xffTrustedHops !== undefined && !(Number.isInteger(xffTrustedHops) && xffTrustedHops >= 0 && xffTrustedHops <= 10)) problems.push('--xff-trusted-hops must be an integer from 0 to 10 (the proxies in front of Envoy)');
  if (options.xffTrustedHops !== undefined && options.oktaHook === undefined) problems.push('--xff-trusted-hops names the client of the hook route --okta-hook adds: give --okta-hook too');
  const addresses: Partial<Record<'listen' | 'admin', HostPort>> = {};
  for (const key of ['listen', 'admin'] as const) {
    const address = parseOrNote(options[key], (text) => parseHostPort(text, `--${key}`), problems);
    if (address) addresses[key] = address;
  }
  // The admin can stop Envoy (/quitquitquit) and dump its config: never beyond loopback. Prometheus
  // reads its stats through the readiness listener's GET /stats/prometheus instead.
  if (addresses.admin && !isLoopbackOnly(addresses.admin)) problems.push('--admin must be a loopback address (127.0.0.1 or ::1): the admin can stop Envoy; scrape its stats through --ready (GET /stats/prometheus)');
  const ready = options.ready === 'off' ? undefined : parseOrNote(options.ready, (text) => parseHostPort(text, '--ready'), problems);
  const sidecar: ListenAddress | undefined = parseOrNote(options.sidecar, (text) => parseListenAddress(text, '--sidecar'), problems);
  const sidecarTlsFiles = [options.sidecarTlsCert, options.sidecarTlsKey, options.sidecarCa];
  if (sidecarTlsFiles.some(Boolean) && !sidecarTlsFiles.every(Boolean)) problems.push('--sidecar-tls-cert, --sidecar-tls-key and --sidecar-ca go together (mTLS to the sidecar)');
  const tokenRateLimit: RateLimit | undefined = options.tokenRateLimit === undefined ? undefined : parseOrNote(options.tokenRateLimit, parseRateLimit, problems);
  const allowSources: Cidr[] = parseEach(options.allowSource, parseCidr, problems);
  const messageTimeoutMs = options.messageTimeoutMs === undefined ? undefined : Number(options.messageTimeoutMs);
  if (messageTimeoutMs !== undefined && !(Number.isInteger(messageTimeoutMs) && messageTimeoutMs > 0)) problems.push('--message-timeout-ms must be a positive integer');
  const sidecarMaxStreams = options.sidecarMaxStreams === undefined ? undefined : Number(options.sidecarMaxStreams);
  if (sidecarMaxStreams !== undefined && !(Number.isInteger(sidecarMaxStreams) && sidecarMaxStreams > 0)) problems.push('--sidecar-max-streams must be a positive integer');
  if (Boolean(options.tlsCert) !== Boolean(options.tlsKey)) problems.push('--tls-cert and --tls-key go together');
  for (const file of [options.tlsCert, options.tlsKey, ...sidecarTlsFiles]) {
    if (file && !existsSync(file)) problems.push(`${file} does not exist (Envoy reads it at start)`);
  }
  if (problems.length > 0) throw new UsageError(problems.join('\n'));
  let yaml: string;
  try {
    yaml = renderEnvoyYaml({
      idps,
      profiles,
      listen: addresses.listen!,
      sidecar: sidecar!,
      ...(options.sidecarTlsCert && options.sidecarTlsKey && options.sidecarCa
        ? { sidecarTls: { certFile: path.resolve(options.sidecarTlsCert), keyFile: path.resolve(options.sidecarTlsKey), caFile: path.resolve(options.sidecarCa) } }
        : {}),
      ...(tokenRateLimit ? { tokenRateLimit } : {}),
      ...(allowSources.length > 0 ? { allowSources } : {}),
      admin: addresses.admin!,
      ...(ready ? { ready } : {}),
      mode: options.mode,
      messageTimeoutMs,
      sidecarMaxStreams,
      upstreamCaFile: options.upstreamCa,
      ...(oktaHook ? { oktaHook } : {}),
      ...(oktaHookRateLimit !== undefined ? { oktaHookRateLimit } : {}),
      ...(xffTrustedHops ? { xffTrustedHops } : {}),
      ...(options.tlsCert && options.tlsKey ? { tls: { certFile: path.resolve(options.tlsCert), keyFile: path.resolve(options.tlsKey) } } : {}),
    });
  } catch (error) {
    throw new UsageError(asError(error).message, { cause: error });
  }
  process.stdout.write(yaml);
}


async function grantsShow(options: { idp: string; subject?: string; pending: boolean }): Promise<void> {
  if (options.pending === Boolean(options.subject)) throw new UsageError('give either --subject SUB or --pending');
  // A decrypting read: its access_events row is committed before anything is printed (cli/vault.ts).
  if (options.pending) {
    const pending = await audited('ListPendingGrants', { keys: true }, { idp: options.idp }, async ({ store }, event) => {
      const found = await store.findPending(options.idp);
      event.detail = `${found.length} held grants`;
      return found.map(pendingToJson);
    });
    process.stdout.write(`${JSON.stringify(pending, null, 2)}\n`);
    return;
  }
  // Operators see a revoked grant too; the CLI never refreshes on read.
  const grant = await audited('GetGrant', { keys: true }, { idp: options.idp, subject: options.subject }, async ({ store }) => {
    const { grant: found } = await getGrant({ store }, { idp: options.idp, subject: options.subject!, refuseRevoked: false });
    return grantToJson(found);
  });
  process.stdout.write(`${JSON.stringify(grant, null, 2)}\n`);
}

export function buildProgram(): Command {
  const program = new Command('token-tap')
    .description('Capture the tokens an external IdP hands to Okta, through Envoy ext_proc, encrypted into Postgres.')
    .showHelpAfterError('(run with --help for usage)');

  program
    .command('serve')
    .description('Run the sidecar: the ext_proc gRPC server Envoy sends token responses to.\nReads DATABASE_URL and TOKEN_TAP_KEYS (id1:base64key,id0:base64key; first is active).')
    .option('--listen <address>', `ext_proc gRPC listen address: unix:/path or a loopback HOST:PORT (env ${LISTEN.name}, default ${LISTEN.default})`, undefined)
    .option('--allow-remote-extproc', `let ext_proc listen beyond loopback (env ${ALLOW_REMOTE_EXTPROC.name}=true); use mTLS: ${EXTPROC_TLS.cert}, ${EXTPROC_TLS.key}, ${EXTPROC_TLS.clientCa}`)
    .option('--api-listen <host:port>', `TokenVault gRPC API listen address, or "off" (env ${API_LISTEN.name}, default ${API_LISTEN.default})`)
    .option('--hook-listen <host:port>', `Okta token inline hook (HTTP, POST /okta/token-hook) listen address, or "off" (env ${HOOK_LISTEN.name}, default ${HOOK_LISTEN.default}); needs ${HOOK_CONFIG.name}`)
    .option('--exchange-listen <host:port>', `RFC 8693 token exchange (HTTP, POST /oauth2/token) listen address, or "off" (env ${EXCHANGE_LISTEN.name}, default ${EXCHANGE_LISTEN.default}); needs ${EXCHANGE_CONFIG.name}, and TLS beyond loopback`)
    .option('--log-level <level>', `fatal|error|warn|info|debug|trace|silent (env ${LOG_LEVEL.name}, default ${LOG_LEVEL.default})`)
    .action(serve);

  program
    .command('envoy-config')
    .description('Print a complete Envoy bootstrap: a route /idp/NAME/token per IdP, relayed to its token URL, with ext_proc on those routes only.')
    .option('--idp <name=url>', 'an IdP and its real token endpoint; repeat for several', collect, [])
    .option('--userinfo <name=url>', "an IdP's profile endpoint, for IdPs without id_token (GitHub: https://api.github.com/user); Okta's user info URL becomes /idp/NAME/userinfo", collect, [])
    .option('--userinfo-subject <name=field>', 'where the user id sits in that profile (default: sub, then id, then user_id), e.g. x=data.id', collect, [])
    .option('--listen <host:port>', 'where Okta reaches Envoy', '0.0.0.0:8080')
    .option('--sidecar <address>', 'the token-tap sidecar (ext_proc): unix:/path (a socket shared with the sidecar) or HOST:PORT', LISTEN.default)
    .option('--sidecar-tls-cert <file>', "mTLS to a sidecar beyond loopback: Envoy's client certificate (PEM)")
    .option('--sidecar-tls-key <file>', 'the PEM private key for --sidecar-tls-cert')
    .option('--sidecar-ca <file>', "the CA bundle the sidecar's certificate chains to")
    .option('--token-rate-limit <n/s>', 'at most N calls per second (N/s, N/m, N/h) on each token route; beyond, Envoy answers 429 without calling the IdP')
    .option('--allow-source <cidr>', "only these source networks reach Envoy (403 for others), e.g. Okta's published egress ranges; repeat for several", collect, [])
    .option('--admin <host:port>', 'Envoy admin interface (keep it on loopback)', '127.0.0.1:9901')
    .option('--ready <host:port>', `Envoy's readiness listener, or "off": GET ${ENVOY_READY_PATH} answers 200 only while Envoy sees the sidecar healthy; point the readiness probe here (Kubernetes: 0.0.0.0:${ENVOY_READY_PORT}, the kubelet probes the pod's address)`, `127.0.0.1:${ENVOY_READY_PORT}`)
    .addOption(new Option('--mode <mode>', 'observability: Envoy never waits; buffered: one loopback round trip per message').choices(['observability', 'buffered']).default('observability'))
    .option('--message-timeout-ms <ms>', 'buffered mode: how long Envoy waits for the sidecar before failing open (default 200)')
    .option('--sidecar-max-streams <n>', 'circuit breaker: ext_proc streams open at once (peak token calls/s x seconds each stays open); beyond it logins go on uncaptured (default 4096)')
    .option('--upstream-ca <file>', 'CA bundle to verify https IdPs', '/etc/ssl/certs/ca-certificates.crt')
    .option('--tls-cert <file>', 'serve Okta over https with this PEM certificate chain (TLS 1.2+, HTTP/1.1 and HTTP/2)')
    .option('--tls-key <file>', 'the PEM private key for --tls-cert')
    .option('--okta-hook <host:port>', "the sidecar's Okta hook listener (serve --hook-listen): adds the route POST /okta/token-hook, without ext_proc")
    .option(
      '--okta-hook-rate-limit <n/s[:burst]>',
      'a token bucket per client address on the hook route (N/s, N/m or N/h, optionally :BURST; "off" or 0: none); beyond it Envoy answers 429 to that client and Okta, refused, issues its tokens unchanged; ' +
        "one client's flood never empties another's bucket. Default 100/s:200 (6,000 a minute, 200 at once) per address: Okta calls the hook at most once per token request to a custom authorization server, and all of an org's custom authorization servers share one per-minute rate limit (its Rate Limit dashboard shows it); raise this above that limit if yours is higher",
    )
    .option(
      '--xff-trusted-hops <n>',
      "proxies in front of Envoy that append to X-Forwarded-For (a load balancer: 1): the hook's client address is then the one N hops from the right of that header. " +
        "Default 0: the connection's own address (behind a load balancer, the balancer's: every caller then shares one bucket)",
    )
    .action(envoyConfig);

  program
    .command('envoy-gateway')
    .description('Print Kubernetes resources for Envoy Gateway (Backend, HTTPRoute, EnvoyExtensionPolicy, the sidecar Deployment) or, with --istio, an Istio ingress gateway (EnvoyFilter ...).')
    .option('--idp <name=url>', 'an IdP and its real token endpoint; repeat for several', collect, [])
    .addOption(new Option('--mode <mode>', 'observability: shadowMode (Envoy Gateway v1.9+); buffered: for older Envoy Gateway').choices(['observability', 'buffered']).default('observability'))
    .option('--namespace <ns>', 'namespace of token-tap and its routes', 'token-tap')
    .option('--gateway <ns/name>', 'the Gateway to attach to', 'envoy-gateway-system/eg')
    .option('--hostname <host>', 'a hostname Okta calls; repeat for several', collect, [])
    .option('--image <image>', 'the sidecar image')
    .option('--istio', 'render for an Istio ingress gateway instead (--gateway names the Istio Gateway)', false)
    .option('--okta-hook-rate-limit <n/s[:burst]>', 'a rate limit per client address on the Okta hook rule (N/s, N/m or N/h; :BURST for Istio only, Envoy Gateway has none; "off" or 0: none); default 100/s:200, see envoy-config --help')
    .option('--token-exchange', 'render the token exchange too (port 8444, TLS; needs the Secret token-tap-exchange-tls and ConfigMap token-tap-exchange)', false)
    .action(async (options: { idp: string[]; mode: ProcessingMode; namespace: string; gateway: string; hostname: string[]; image?: string; istio: boolean; oktaHookRateLimit?: string; tokenExchange: boolean }) => {
      const { renderGatewayCommand } = await import('../envoyconfig/gateway-cli.js');
      process.stdout.write(renderGatewayCommand(options, UsageError));
    });

  const grants = program.command('grants').description('Read captured grants (operators; tokens are printed decrypted).');
  grants
    .command('show')
    .description('Print the stored grant for an IdP and subject as JSON. Reads DATABASE_URL and TOKEN_TAP_KEYS.')
    .requiredOption('--idp <name>', 'the IdP name (as in the Envoy route)')
    .option('--subject <sub>', "the user's subject (the id_token's sub, or the profile's id)")
    .option('--pending', 'instead: the grants held until a profile call names their user (IdPs without id_token)', false)
    .action(grantsShow);

  program
    .command('demo')
    .description('Run the whole stack locally (demo IdP, sidecar, Envoy; Postgres from DATABASE_URL or embedded),\nperform one login as Okta would, and print what was captured. Needs dev dependencies (oidc-provider,\nopenid-client, PGlite): run it from a checkout after npm ci.')
    .addOption(new Option('--mode <mode>', 'ext_proc mode').choices(['observability', 'buffered']).default('observability'))
    .option('--once', 'exit after the login instead of running until Ctrl-C', false)
    .option('--envoy-port <port>', 'Envoy listener port', '8080')
    .option('--sidecar-port <port>', 'sidecar ext_proc port', '50051')
    .option('--admin-port <port>', 'Envoy admin port', '9901')
    .option('--state-dir <dir>', 'where the demo keeps its key ring, logs and embedded database', '.token-tap/demo')
    .action(async (options: { mode: ProcessingMode; once: boolean; envoyPort: string; sidecarPort: string; adminPort: string; stateDir: string }) => {
      const ports = [options.envoyPort, options.sidecarPort, options.adminPort].map(Number);
      if (!ports.every((port) => Number.isInteger(port) && port > 0 && port < 65536)) throw new UsageError('ports must be integers between 1 and 65535');
      // The demo runs on dev dependencies (oidc-provider, openid-client, PGlite): not in the sidecar image.
      const { runDemo } = await import('../demo/run.js').catch((error: unknown) => {
        if ((error as { code?: unknown }).code !== 'ERR_MODULE_NOT_FOUND') throw error;
        throw new UsageError(`the demo needs the dev dependencies (oidc-provider, openid-client, PGlite), which the sidecar image leaves out: run it from a checkout after \`npm ci\` (\`npm run demo\`) (${asError(error).message})`, { cause: error });
      });
      await runDemo({ mode: options.mode, once: options.once, envoyPort: ports[0]!, sidecarPort: ports[1]!, adminPort: ports[2]!, stateDir: options.stateDir });
    });

  program
    .command('demo-idp')
    .description('Run only the demo IdP (oidc-provider, in memory, one client, user alice) for docker compose or a\nreal Okta trial. Needs dev dependencies (oidc-provider). Reads DEMO_IDP_CLIENT_SECRET.')
    .option('--listen <host:port>', 'where to listen', '127.0.0.1:3000')
    .option('--issuer <url>', 'the issuer URL others reach it by (default http://<listen>)')
    .option('--redirect-uri <url>', "a redirect URI its client may use, e.g. https://<your-org>.okta.com/oauth2/v1/authorize/callback; repeat for several", collect, [])
    .action(async (options: { listen: string; issuer?: string; redirectUri: string[] }) => {
      let listen: HostPort;
      try {
        listen = parseHostPort(options.listen, '--listen');
      } catch (error) {
        throw new UsageError(asError(error).message, { cause: error });
      }
      const clientSecret = process.env.DEMO_IDP_CLIENT_SECRET;
      if (!clientSecret || clientSecret.length < 16) throw new UsageError('set DEMO_IDP_CLIENT_SECRET (16 characters or more): the secret of the demo client that Okta (or the demo) uses');
      const { startDemoIdp } = await import('../demo/oidc-idp.js').catch((error: unknown) => {
        throw new UsageError(`the demo IdP needs the dev dependencies (oidc-provider): run npm ci first (${asError(error).message})`, { cause: error });
      });
      const idp = await startDemoIdp({ host: listen.host, port: listen.port, issuer: options.issuer ?? `http://${formatHostPort(listen)}`, clientSecret, redirectUris: options.redirectUri });
      process.stdout.write(`demo IdP ready: issuer ${idp.issuer}, token URL ${idp.tokenUrl}, client id ${idp.clientId}, user alice (alice@example.test)\n`);
      await new Promise<void>((resolve) => {
        process.once('SIGINT', resolve);
        process.once('SIGTERM', resolve);
      });
      await idp.close();
    });

  registerVaultCommands(program);
  registerCaptureCommands(program);
  registerKeyCommands(program);
  registerReportCommand(program);
  return program;
}

/** Exit codes by outcome: EX_CONFIG (78, sysexits.h) for settings that cannot be used, 1 for any other failure. */
const EXIT_CODES: Partial<Record<Outcome, number>> = { misconfigured: 78 };

/** The exit code of a command that threw `error`. */
export function exitCodeOf(error: unknown): number {
  return EXIT_CODES[outcomeOf(error)] ?? 1;
}

export async function runCli(argv: string[]): Promise<number> {
  try {
    await buildProgram().parseAsync(argv);
    return 0;
  } catch (error) {
    // The operator ran the command: every message is shown (none carries a secret).
    process.stderr.write(`token-tap: ${asError(error).message}\n`);
    return exitCodeOf(error);
  }
}


