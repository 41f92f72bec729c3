/**
 * Scenario client-selection: what choosing an instance costs a call, for each strategy at 100
 * instances, measured by packages/discovery/bench/select.ts in a fresh process per repeat (so one
 * strategy's JIT state never helps another's). The goal is the issue's: under 1 µs for P2C.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import type { ScenarioContext } from '../lib/context.ts';
import type { Figure, ScenarioResult } from '../lib/results.ts';

const run = promisify(execFile);
const SCRIPT = fileURLToPath(new URL('../../packages/discovery/bench/select.ts', import.meta.url));

interface SelectFigures {
  readonly instances: number;
  readonly picks: number;
  readonly node: string;
  readonly figures: readonly { strategy: string; pickNs: number; filteredNs: number; callNs: number; gcs: number }[];
}

/** Runs the scenario. */
export async function clientSelection(ctx: ScenarioContext): Promise<ScenarioResult> {
  const picks = ctx.options.scale === 'small' ? 200_000 : 1_000_000;
  const runs: SelectFigures[] = [];
  for (let r = 0; r < ctx.options.repeats; r++) {
    ctx.log(`client-selection run ${r + 1}/${ctx.options.repeats}: ${picks} selections per strategy`);
    const { stdout } = await run(process.execPath, [SCRIPT, String(picks), '--json'], { maxBuffer: 1 << 20 });
    runs.push(JSON.parse(stdout) as SelectFigures);
  }
  const first = runs[0]!;
  const figures: Figure[] = [];
  for (const [i, { strategy }] of first.figures.entries()) {
    const of = (pick: (f: SelectFigures['figures'][number]) => number): number[] => runs.map((r) => pick(r.figures[i]!));
    const goal = strategy === 'p2c-peak-ewma' ? { goal: { kind: 'below' as const, threshold: 1000, text: '< 1000 ns' } } : {};
    figures.push(
      { case: strategy, name: 'pick()', unit: 'ns', runs: of((f) => f.pickNs) },
      { case: strategy, name: 'pick() with a tag filter half the instances match', unit: 'ns', runs: of((f) => f.filteredNs) },
      { case: strategy, name: 'acquire() + release() (what call() adds per attempt)', unit: 'ns', runs: of((f) => f.callNs), ...goal },
    );
  }
  return {
    id: 'client-selection',
    title: '7. Client: selection overhead per call (100 instances)',
    setup: [
      `${first.instances} instances with weights 1-10 and two zones; ${first.picks} selections per figure after a warm-up, real clock, node ${first.node}, one fresh process per repeat.`,
    ],
    figures,
    notes: [],
    details: runs,
  };
}
