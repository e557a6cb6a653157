# syntax=docker/dockerfile:1
# Build stage: full dependencies to compile TypeScript.
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npx tsc -p tsconfig.build.json

# Runtime stage: production dependencies only, non-root, signals go straight to node.
FROM node:20-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
# --omit=optional leaves out the embedded PostgreSQL binaries, which only the demo and tests use.
RUN npm ci --omit=dev --omit=optional --ignore-scripts --no-audit --no-fund && npm cache clean --force
COPY --from=build /app/dist ./dist
COPY bin ./bin
COPY dashboards ./dashboards
COPY alerts ./alerts
USER node
# The config is mounted (default path below, or PGBIDI_CONFIG); secrets come from the environment:
# PGBIDI_NODE_PASSWORD, PGBIDI_PEER_<NAME>_PASSWORD, or whole DSNs in PGBIDI_NODE_DSN / PGBIDI_PEER_<NAME>_DSN.
ENV PGBIDI_CONFIG=/etc/pgbidi/pgbidi.yaml
EXPOSE 9464
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:9464/healthz').then(r => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
CMD ["node", "bin/pgbidi.js", "run"]
