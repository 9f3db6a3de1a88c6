# syntax=docker/dockerfile:1
#
# nvidia-sidecar container image.
#
#   docker build -t nvidia-sidecar .
#   docker run --rm --init -p 9190:9190 -p 9191:9191 --env-file .env --stop-timeout 35 nvidia-sidecar
#
# The runtime stage holds only the esbuild bundle (dist/), the CLI entry point (bin/), the
# dashboard page (static/) and package.json: `npm run build` bundles every production dependency
# into dist/main.mjs, so the ~120 MB of production node_modules would only add size and scanner
# noise. test/deploy.test.ts starts the sidecar from a directory holding just these entries.

# Node.js 24, an LTS line (supported until April 2028; Node 20 reached its end of life in April
# 2026). CI runs the test suite on this line too (.ci/run); test/deploy.test.ts keeps it equal to
# the flake's nodejs_24.
ARG NODE_IMAGE=node:24-bookworm-slim

# ---- build: full install (dev deps include esbuild), then bundle ------------------------------
FROM ${NODE_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
# --ignore-scripts: package.json "allowScripts" disables every install script this tree has.
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY . .
RUN npm run build

# ---- runtime ----------------------------------------------------------------------------------
FROM ${NODE_IMAGE} AS runtime
WORKDIR /app
ENV NODE_ENV=production
# Listen on all interfaces so the published ports reach the sidecar. Outside loopback, admin
# writes (POST /api/admin/config) are refused unless SIDECAR_ADMIN_TOKEN is set: set it.
ENV SIDECAR_HOST=0.0.0.0
COPY --from=build /src/package.json ./package.json
COPY --from=build /src/bin ./bin
COPY --from=build /src/dist ./dist
COPY --from=build /src/static ./static
# Files stay root-owned and read-only to the service. 1000:1000 is the image's `node` user,
# numeric so that Kubernetes runAsNonRoot can verify it.
USER 1000:1000
# 9190 proxy + dashboard + admin API, 9191 Prometheus /metrics.
EXPOSE 9190 9191
# Liveness only (/health); orchestrators wanting readiness should probe /health/ready.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["node", "-e", "require('node:http').get('http://127.0.0.1:'+(process.env.SIDECAR_PORT||9190)+'/health',r=>process.exit(r.statusCode===200?0:1)).on('error',()=>process.exit(1)).setTimeout(4000,()=>process.exit(1))"]
# SIGTERM drains in-flight calls for up to SIDECAR_DRAIN_TIMEOUT (25 s) and exits 0. Docker's
# default stop timeout is 10 s: use `docker stop -t 35`, `--stop-timeout 35`, compose
# `stop_grace_period: 35s`, or Kubernetes `terminationGracePeriodSeconds: 35`.
STOPSIGNAL SIGTERM
CMD ["node", "bin/nvidia-sidecar.mjs"]
