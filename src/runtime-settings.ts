/**
 * The process settings the container image runs the operator with (the Dockerfile's ENV lines;
 * test/integration/image.test.ts keeps the two equal), and with which the benchmarks start it.
 *
 * - A small young generation. Node 24's default lets V8 reserve far more heap than the operator
 *   keeps alive (315 MB reserved for 72 MB in use at 3,000 ServiceInstances); 2 MB semi-spaces
 *   keep the reservation close to what is used, for a few more cheap scavenges.
 * - Two malloc arenas. glibc gives every thread its own arena, and memory freed in one is not
 *   returned to the system; with V8's and libuv's worker threads that is a large share of RSS.
 */
export const RUNTIME_ENV: Readonly<Record<string, string>> = {
  NODE_OPTIONS: '--max-semi-space-size=2',
  MALLOC_ARENA_MAX: '2',
};
