/** What every scenario gets from the runner. */
import type { BedVersions } from '../../testbed/bed.ts';
import type { BenchOptions } from './options.ts';

/** The runner's services to a scenario. */
export interface ScenarioContext {
  readonly options: BenchOptions;
  /** Progress lines (stderr), so stdout keeps only the table. */
  readonly log: (line: string) => void;
  /** Directory for this run's artefacts: operator logs, CPU profiles. */
  readonly runDir: string;
  /** Told the server versions once a bed ran, for the machine description. */
  readonly onVersions: (v: BedVersions) => void;
  /** Node flags for the operator: the experiment's `--import`, and `--cpu-prof` into `profileDir` when given. */
  readonly nodeFlags: (profileDir?: string) => string[];
}
