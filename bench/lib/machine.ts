/** What the benchmarks ran on: enough for a reader to judge and reproduce the figures. */
import { readFile } from 'node:fs/promises';
import { cpus, totalmem, loadavg, release } from 'node:os';
import type { BedVersions } from '../../testbed/bed.ts';

/** Machine and software description. */
export interface Machine {
  readonly cpus: number;
  readonly cpuModel: string;
  readonly memoryGiB: number;
  readonly kernel: string;
  readonly node: string;
  readonly loadAverageAtStart: string;
  readonly versions?: BedVersions;
}

/** Describes this machine; bed versions are added once a bed ran. */
export async function describeMachine(): Promise<Machine> {
  let model = cpus()[0]?.model ?? 'unknown';
  try {
    model = /model name\s*:\s*(.*)/.exec(await readFile('/proc/cpuinfo', 'utf8'))?.[1] ?? model;
  } catch {
    // Not Linux: the os module's model is good enough.
  }
  return {
    cpus: cpus().length,
    cpuModel: model.trim(),
    memoryGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    kernel: release(),
    node: process.version,
    loadAverageAtStart: loadavg()
      .map((l) => l.toFixed(2))
      .join(' '),
  };
}
