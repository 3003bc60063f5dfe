# token-tap sidecar image: build with dev dependencies, ship only production ones, run as non-root.
FROM node:22.12-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
# Dev dependencies too: the build cuts the ext_proc descriptor from @grpc/grpc-js-xds's protos.
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
# The build generates the TokenVault message types from the proto (scripts/generate-proto-types.js).
COPY proto ./proto
COPY src ./src
COPY scripts ./scripts
COPY test ./test
COPY bench ./bench
COPY bin ./bin
RUN npm run build

# The demo IdP for docker-compose.yml (oidc-provider is a dev dependency, so it runs from the build
# stage): docker build --target demo-idp. Never part of the sidecar image.
FROM build AS demo-idp
USER node
EXPOSE 3000
ENTRYPOINT ["node", "bin/token-tap.js"]
CMD ["demo-idp", "--listen", "0.0.0.0:3000"]

FROM node:22.12-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
# Production dependencies only: no PGlite (the demo's), no @grpc/grpc-js-xds (the build's; dist/src
# carries the descriptor cut from it). test/integration/packaging.test.ts runs serve without them.
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force
COPY --from=build /app/dist/src ./dist/src
COPY bin ./bin
COPY proto ./proto
# Captures wait here while Postgres is away; mount a volume so they outlive the container.
ENV TOKEN_TAP_SPOOL_DIR=/var/spool/token-tap
# The spool directory's lock is held by flock(1) running cat(1) (src/ingest/spool-lock.ts), started by
# absolute path: util-linux and coreutils, Essential in Debian, so in this base image; the build stops
# here should a base image ever lack them.
RUN test -x /usr/bin/flock && test -x /bin/cat || { echo '/usr/bin/flock (util-linux) or /bin/cat (coreutils) is missing: the spool lock needs them' >&2; exit 1; }
# ext_proc is served on a Unix socket here, never on a network address: whoever reaches ext_proc can
# write grants. Mount a volume on /run/token-tap that Envoy shares (group node, gid 1000: the socket
# is 0660). `serve --listen 127.0.0.1:50051` when Envoy shares the network namespace instead.
RUN mkdir -p /var/spool/token-tap /run/token-tap && chown node:node /var/spool/token-tap /run/token-tap
VOLUME /var/spool/token-tap
USER node
# Node flags for serve (src/ops/node-flags.ts): a small young generation and one V8 helper thread.
ENTRYPOINT ["node", "--max-semi-space-size=1", "--v8-pool-size=1", "bin/token-tap.js"]
CMD ["serve", "--listen", "unix:/run/token-tap/extproc.sock"]
