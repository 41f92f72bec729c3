/**
 * `npm run bench`: starts the test bed, runs the scenarios of the performance issue, prints a
 * table, writes every raw figure to bench/results/<timestamp>.json and rewrites the generated
 * blocks of BENCHMARKS.md. Timing lives here and never in the tests.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { REPO_ROOT } from '../testbed/provision.ts';
import type { BedVersions } from '../testbed/bed.ts';
import type { ScenarioContext } from './lib/context.ts';
import { describeMachine } from './lib/machine.ts';
import { parseOptions, SCENARIOS, USAGE, type ScenarioId } from './lib/options.ts';
import { compileOperator } from './lib/operator.ts';
import { textTable, updateBenchmarksMd } from './lib/report.ts';
import type { ScenarioResult } from './lib/results.ts';
import { churn } from './scenarios/churn.ts';
import { clientPropagation } from './scenarios/client-propagation.ts';
import { clientSelection } from './scenarios/client-selection.ts';
import { clientSlowBackend } from './scenarios/client-slow-backend.ts';
import { coldSync } from './scenarios/cold-sync.ts';
import { consulCapacity } from './scenarios/consul-capacity.ts';
import { consulColdSync } from './scenarios/consul-cold-sync.ts';
import { healthChecks } from './scenarios/health-checks.ts';
import { propagation } from './scenarios/propagation.ts';
import { recovery } from './scenarios/recovery.ts';
import { rollout } from './scenarios/rollout.ts';
import { steadyState } from './scenarios/steady-state.ts';
import { zookeeperScenario } from './scenarios/zookeeper.ts';

const RUNNERS: Readonly<Record<ScenarioId, (ctx: ScenarioContext) => Promise<ScenarioResult>>> = {
  'cold-sync': coldSync,
  propagation,
  'steady-state': steadyState,
  'consul-cold-sync': consulColdSync,
  churn,
  'health-checks': healthChecks,
  'client-selection': clientSelection,
  'client-slow-backend': clientSlowBackend,
  'client-propagation': clientPropagation,
  zookeeper: zookeeperScenario,
  recovery,
  'consul-capacity': consulCapacity,
  rollout,
};

async function main(): Promise<number> {
  let options;
  try {
    options = parseOptions(process.argv.slice(2));
  } catch (err: unknown) {
    console.error(err instanceof Error ? err.message : String(err));
    return 2;
  }
  if (!options) {
    console.log(USAGE);
    return 0;
  }
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const resultsDir = join(REPO_ROOT, 'bench', 'results');
  const runDir = join(resultsDir, stamp);
  await mkdir(runDir, { recursive: true });
  const machine = await describeMachine(REPO_ROOT);
  let versions: BedVersions | undefined;
  const log = (line: string): void => console.error(`[bench ${new Date().toISOString().slice(11, 19)}] ${line}`);
  const experiment = [options.experiment, ...options.nodeOptions, ...options.operatorFlags].filter(Boolean).join(' ') || undefined;
  const experimentFile = options.experiment ? join(REPO_ROOT, 'bench', 'experiments', `${options.experiment}.ts`) : undefined;
  const ctx: ScenarioContext = {
    options,
    log,
    runDir,
    onVersions: (v) => (versions ??= v),
    nodeFlags: (profileDir) => [
      ...options.nodeOptions,
      ...(experimentFile ? [`--import=${experimentFile}`] : []),
      ...(profileDir ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : []),
    ],
  };
  log(`operator compiled as the image builds it: ${relative(REPO_ROOT, await compileOperator())}`);
  log(`scale ${options.scale}, ${options.repeats} run(s) per case, scenarios: ${[...options.only].join(', ')}; artefacts in ${runDir}`);

  const results: ScenarioResult[] = [];
  const failures: { scenario: string; error: string }[] = [];
  for (const id of SCENARIOS) {
    if (!options.only.has(id)) continue;
    const started = performance.now();
    log(`--- ${id}`);
    try {
      const r = await RUNNERS[id](ctx);
      // An experiment's figures get blocks of their own: they are not the shipped code's.
      results.push(
        experiment
          ? {
              ...r,
              id: `${r.id}+${experiment.replace(/[^a-z0-9=.-]+/gi, '_')}`,
              title: `${r.title} — experiment: ${experiment} (not the shipped configuration)`,
            }
          : r,
      );
    } catch (err: unknown) {
      // One broken scenario must not cost the figures of the others.
      const error =
        err instanceof Error
          ? `${err.message}${err.cause instanceof Error ? `: ${err.cause.message}` : ''}\n${err.stack ?? ''}`
          : String(err);
      failures.push({ scenario: id, error });
      log(`${id} failed: ${error}`);
    }
    log(`--- ${id} took ${((performance.now() - started) / 60_000).toFixed(1)} min`);
  }

  const when = new Date().toISOString().slice(0, 16).replace('T', ' ') + ' UTC';
  const full = { ...machine, ...(versions ? { versions } : {}) };
  const file = join(resultsDir, `${stamp}.json`);
  await writeFile(
    file,
    JSON.stringify({ when, options: { ...options, only: [...options.only] }, machine: full, results, failures }, null, 2),
  );
  console.log(textTable(results));
  for (const f of failures) console.log(`\nscenario ${f.scenario} FAILED: ${f.error.split('\n')[0] ?? ''}`);
  if (options.markdown && results.length > 0) {
    await updateBenchmarksMd(
      join(REPO_ROOT, 'BENCHMARKS.md'),
      full,
      results,
      when,
      options.scale,
      options.repeats,
      experiment ? results.map((r) => r.id) : SCENARIOS,
    );
    log('BENCHMARKS.md updated');
  }
  log(`results: ${file}`);
  return failures.length > 0 ? 1 : 0;
}

process.exitCode = await main();
