/**
 * Rewrites the BENCHMARKS.md blocks of the scenarios in saved result files (bench/results/*.json,
 * as `npm run bench` writes them), each block with the machine, commit, time and scale of its own
 * run: for runs made with --no-markdown, or one scenario at a time.
 *
 *   node bench/render.ts bench/results/<stamp>.json [more.json ...]
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { REPO_ROOT } from '../testbed/provision.ts';
import type { Machine } from './lib/machine.ts';
import { SCENARIOS } from './lib/options.ts';
import { updateBenchmarksMd } from './lib/report.ts';
import type { ScenarioResult } from './lib/results.ts';

interface SavedRun {
  readonly when: string;
  readonly options: { readonly scale: string; readonly repeats: number };
  readonly machine: Machine;
  readonly results: readonly ScenarioResult[];
}

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error('usage: node bench/render.ts bench/results/<stamp>.json [more.json ...]');
  process.exit(2);
}
for (const file of files) {
  const run = JSON.parse(await readFile(file, 'utf8')) as SavedRun;
  await updateBenchmarksMd(
    join(REPO_ROOT, 'BENCHMARKS.md'),
    run.machine,
    run.results,
    run.when,
    run.options.scale,
    run.options.repeats,
    SCENARIOS,
  );
  console.error(`${file}: ${run.results.map((r) => r.id).join(', ')} (${run.when}, commit ${run.machine.commit})`);
}
