# syntax=docker/dockerfile:1
# Build: compile TypeScript to dist/ with the dev toolchain.
FROM node:24-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund --ignore-scripts
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npx tsc -p tsconfig.build.json

# Production dependencies only, without install scripts.
FROM node:24-bookworm-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund --ignore-scripts

# Runtime: distroless Node 24, non-root, nothing but node, dist/ and production node_modules.
FROM gcr.io/distroless/nodejs24-debian12:nonroot
WORKDIR /app
# Memory settings: see src/runtime-settings.ts (kept equal by test/integration/image.test.ts).
ENV NODE_ENV=production NODE_OPTIONS="--max-semi-space-size=2" MALLOC_ARENA_MAX=1 MALLOC_MMAP_THRESHOLD_=131072 MALLOC_TRIM_THRESHOLD_=131072
COPY --from=deps /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json ./
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["/nodejs/bin/node", "--heap-growing-percent=25", "--expose-gc", "dist/main.js"]
