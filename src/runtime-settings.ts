import { setFlagsFromString } from 'node:v8';

/**
 * The process settings the container image runs the operator with (the Dockerfile's ENV line and
 * the node flags of its ENTRYPOINT; test/integration/image.test.ts keeps them equal), and with
 * which the benchmarks start it.
 *
 * - A small young generation. Node 24's default lets V8 reserve far more heap than the operator
 *   keeps alive (315 MB reserved for 72 MB in use at 3,000 ServiceInstances); 2 MB semi-spaces
 *   keep the reservation close to what is used, for a few more cheap scavenges.
 * - An old generation that grows by a quarter of what survived the last full collection, instead
 *   of V8's default of up to 4×. After the initial sync of 10,000 ServiceInstances V8 otherwise kept
 *   346 MB of old space for 139 MB in use, for good. The cost is more frequent full collections
 *   while much is allocated (a cold sync, resyncs); an idle operator allocates little and rarely
 *   collects either way. Not allowed in NODE_OPTIONS, hence a node flag.
 * - One malloc arena. glibc gives every thread its own arena, and memory freed in one is not
 *   returned to the system; with V8's and libuv's worker threads that is a large share of RSS.
 *   At 10,000 ServiceInstances and 30,000 pods one arena instead of two took the peak RSS of the
 *   initial sync from 295 to 261 MB and the steady-state maximum from 292 to 269 MB, at the same
 *   CPU (single runs; the threads that allocate are few and rarely at once).
 * - The collector exposed to the operator (`--expose-gc`), which calls it once, when the initial
 *   sync has converged ({@link compactHeap}): the sync leaves V8 with far more heap reserved than
 *   it keeps alive, and nothing else makes it give that back soon. At 10,000 ServiceInstances and
 *   30,000 pods: 156 MB reserved for 127 MB in use before, 109 for 102 after, and RSS from 271 to
 *   198 MB. From then on it is compacted again whenever it grew by a tenth, or holds more than
 *   8 MB to give back while the operator is idle (heap-compactor.ts), and the old generation may grow by a tenth instead of a quarter
 *   ({@link settleHeapGrowth}): the work of a settled operator (resyncs, changes) allocates
 *   little that lives long, so more frequent full collections cost little. At 10,000
 *   ServiceInstances and 30,000 pods the two took the steady-state maximum from 231 to 205 MB
 *   (one run each) at 2.6 % of a core; either alone left it at 212–223 MB.
 * - A fixed mmap threshold of 128 KiB (and trim threshold). glibc otherwise raises the threshold
 *   up to 32 MiB each time a large block is freed, after which response buffers of list pages
 *   and registry reads come from the heap, where they fragment it and stay resident.
 */
export const RUNTIME_ENV: Readonly<Record<string, string>> = {
  NODE_OPTIONS: '--max-semi-space-size=2',
  MALLOC_ARENA_MAX: '1',
  MALLOC_MMAP_THRESHOLD_: '131072',
  MALLOC_TRIM_THRESHOLD_: '131072',
};

/** How much the old generation may grow past what survived a full collection once settled (see above). */
export const SETTLED_HEAP_GROWING_PERCENT = 10;

/** Lets the old generation grow by {@link SETTLED_HEAP_GROWING_PERCENT} from now on (after the initial sync). */
export function settleHeapGrowth(): void {
  setFlagsFromString(`--heap-growing-percent=${SETTLED_HEAP_GROWING_PERCENT}`);
}

/** Node flags the image passes before the script (V8 flags NODE_OPTIONS does not accept). */
export const RUNTIME_NODE_FLAGS: readonly string[] = ['--heap-growing-percent=25', '--expose-gc'];

/**
 * Collects every piece of garbage there is and compacts the V8 heap, returning the freed pages to
 * the system; false when the process runs without `--expose-gc` (nothing done). It stops
 * the process for a moment (about 0.1 s per 100 MB of live heap): for after a burst, not for a
 * hot path.
 */
export function compactHeap(): boolean {
  const gc = (globalThis as { gc?: (options?: Record<string, string>) => unknown }).gc;
  if (typeof gc !== 'function') return false;
  gc({ type: 'major', execution: 'sync', flavor: 'last-resort' });
  return true;
}
