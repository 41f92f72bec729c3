/**
 * The shape of benchmark results: figures measured once per repeat, the limit each is compared
 * with (a raw limit measured in the same run, or a fixed goal), and the verdict on the medians.
 */
import { median } from './stats.ts';

/**
 * How a figure is judged.
 * - `ratio-at-least`: value / limit (both measured in the same run) must be ≥ threshold.
 * - `ratio-at-most`: value / limit (both measured in the same run) must be ≤ threshold.
 * - `at-most` / `below`: the value must be ≤ / < threshold; the ratio reported is value / threshold.
 * - `zero`: the value must be 0.
 */
export type GoalKind = 'ratio-at-least' | 'ratio-at-most' | 'at-most' | 'below' | 'zero';

/** A goal from the issue, in words and as a check. */
export interface Goal {
  readonly kind: GoalKind;
  readonly threshold: number;
  /** How the goal reads in the report, e.g. `≥ 0.5 × raw`. */
  readonly text: string;
}

/** A raw limit measured in the same run as the figure. */
export interface Limit {
  readonly name: string;
  readonly unit: string;
  /** One value per repeat, in the same order as the figure's. */
  readonly runs: readonly number[];
}

/** One measured figure. */
export interface Figure {
  /** Case within the scenario, e.g. `static, 10k`. */
  readonly case: string;
  readonly name: string;
  readonly unit: string;
  /** One value per repeat. */
  readonly runs: readonly number[];
  readonly limit?: Limit;
  readonly goal?: Goal;
}

/** Medians and the verdict of a figure. */
export interface Judged {
  readonly median: number;
  readonly limitMedian?: number;
  /** Median over repeats of value / limit (same-run) or value / threshold. */
  readonly ratio?: number;
  readonly met?: boolean;
}

/** Computes medians, ratio and verdict. Ratios are taken per run, then the median of those. */
export function judge(f: Figure): Judged {
  const m = median(f.runs);
  const out: { median: number; limitMedian?: number; ratio?: number; met?: boolean } = { median: m };
  if (f.limit) {
    out.limitMedian = median(f.limit.runs);
    out.ratio = median(f.runs.map((v, i) => v / (f.limit?.runs[i] ?? Number.NaN)));
  }
  const g = f.goal;
  if (g) {
    switch (g.kind) {
      case 'ratio-at-least':
        out.met = out.ratio !== undefined && out.ratio >= g.threshold;
        break;
      case 'ratio-at-most':
        out.met = out.ratio !== undefined && out.ratio <= g.threshold;
        break;
      case 'at-most':
        out.ratio ??= m / g.threshold;
        out.met = m <= g.threshold;
        break;
      case 'below':
        out.ratio ??= m / g.threshold;
        out.met = m < g.threshold;
        break;
      case 'zero':
        out.met = m === 0 && f.runs.every((v) => v === 0);
        break;
    }
    if (!Number.isFinite(m)) out.met = false;
  }
  return out;
}

/** Everything one scenario produced. */
export interface ScenarioResult {
  /** Id used by `--only`, e.g. `cold-sync`. */
  readonly id: string;
  readonly title: string;
  /** What was set up and how it was measured, for the report. */
  readonly setup: readonly string[];
  readonly figures: Figure[];
  /** Anything the reader must know: cases that did not finish, deviations from the plan. */
  readonly notes: string[];
  /** Raw per-run data for the JSON file. */
  readonly details: unknown[];
  /** Summary of a CPU profile or heap snapshot taken during the scenario, when asked for. */
  profile?: string;
}
