/**
 * `node packages/discovery/bench/select.ts [picks]`: nanoseconds per selection for each strategy
 * at 100 instances, with the real clock. Columns: a bare `pick()`; a pick with a tag filter that
 * half the instances match (the same filter object each time, as a caller holding it would); and
 * an `acquire()` + `release()` pair, which is what load-aware strategies see per call. The GC
 * column counts garbage collections during the timed loops of a strategy: 0 means the hot path
 * allocated too little to trigger one. Timing lives here, never in the tests.
 *
 * With `--json` it prints the figures as one JSON line instead (read by the `client-selection`
 * scenario of `npm run bench`).
 */
import { PerformanceObserver } from 'node:perf_hooks';
import { InstanceSelector } from '../src/selector.ts';
import { STRATEGIES, type Strategy } from '../src/balancers/balancer.ts';
import type { CallResult } from '../src/selector.ts';
import type { Instance } from '../src/instance.ts';
import { seededRandom } from '../src/random.ts';

const INSTANCES = 100;
const JSON_OUTPUT = process.argv.includes('--json');
const PICKS = Number(process.argv.slice(2).find((a) => !a.startsWith('--')) ?? 1_000_000);

const instances: Instance[] = Array.from({ length: INSTANCES }, (_, k) => ({
  id: `i${k}`,
  address: `10.0.${k >> 8}.${k & 255}`,
  port: 8080,
  weight: 1 + (k % 10),
  tags: { zone: k % 2 === 0 ? 'a' : 'b', version: '1.0' },
}));
const filter = { zone: 'a' };
// One result object per instance, built once: the benchmark measures the selector, not the caller.
const results = new Map<Instance, CallResult>(instances.map((i, k) => [i, { ok: true, latencyMs: 5 + (k % 7) }]));

// GC entries arrive asynchronously; they are matched to the timed windows once delivered.
const gcTimes: number[] = [];
const observer = new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) gcTimes.push(entry.startTime);
});
observer.observe({ entryTypes: ['gc'] });

/** A timed run: ns per selection, and its window in performance.now() time for the GC count. */
interface Timing {
  ns: number;
  window: [number, number];
}

function time(n: number, body: () => void): Timing {
  const from = performance.now();
  const start = process.hrtime.bigint();
  body();
  const ns = Number(process.hrtime.bigint() - start) / n;
  return { ns, window: [from, performance.now()] };
}

function gcsIn(t: Timing): number {
  return gcTimes.filter((at) => at >= t.window[0] && at <= t.window[1]).length;
}

interface Figures {
  strategy: Strategy;
  pick: Timing;
  filtered: Timing;
  call: Timing;
}

function measure(strategy: Strategy): Figures {
  const s = new InstanceSelector({ service: 'bench', namespace: 'bench', strategy, random: seededRandom(1) });
  s.update(instances);
  let sink = 0;
  const picks = (): void => {
    for (let k = 0; k < PICKS; k++) sink ^= s.pick().port;
  };
  const filteredPicks = (): void => {
    for (let k = 0; k < PICKS; k++) sink ^= s.pick(filter).port;
  };
  const calls = (): void => {
    for (let k = 0; k < PICKS; k++) {
      const i = s.acquire();
      s.release(i, results.get(i)!);
    }
  };
  // Warm up every path so the timed loops run optimised code.
  for (const body of [picks, filteredPicks, calls]) time(PICKS, body);
  const pick = time(PICKS, picks);
  const filtered = time(PICKS, filteredPicks);
  const call = time(PICKS, calls);
  if (sink === -1) console.log(sink); // keep the picks observable
  return { strategy, pick, filtered, call };
}

const figures = STRATEGIES.map(measure);
await new Promise((resolve) => setTimeout(resolve, 50)); // let the observer deliver
observer.disconnect();

if (JSON_OUTPUT) {
  const out = figures.map((f) => ({
    strategy: f.strategy,
    pickNs: f.pick.ns,
    filteredNs: f.filtered.ns,
    callNs: f.call.ns,
    gcs: gcsIn(f.pick) + gcsIn(f.filtered) + gcsIn(f.call),
  }));
  console.log(JSON.stringify({ instances: INSTANCES, picks: PICKS, node: process.version, figures: out }));
  process.exit(0);
}
console.log(`${INSTANCES} instances, ${PICKS} selections per figure, node ${process.version}; ns per selection (GCs during the run)`);
const cell = (t: Timing, width: number): string => `${t.ns.toFixed(1)} (${gcsIn(t)})`.padStart(width);
console.log(`${'strategy'.padEnd(22)}${'pick'.padStart(14)}${'filtered pick'.padStart(16)}${'acquire+release'.padStart(18)}`);
for (const f of figures) console.log(`${f.strategy.padEnd(22)}${cell(f.pick, 14)}${cell(f.filtered, 16)}${cell(f.call, 18)}`);
