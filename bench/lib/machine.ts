/** What the benchmarks ran on: enough for a reader to judge and reproduce the figures. */
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { promisify } from 'node:util';
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
  /** The commit measured, `+dirty` when the working tree had changes. */
  readonly commit: string;
  readonly versions?: BedVersions;
}

async function commitOf(dir: string): Promise<string> {
  const git = promisify(execFile);
  try {
    const sha = (await git('git', ['-C', dir, 'rev-parse', '--short', 'HEAD'])).stdout.trim();
    const dirty = (await git('git', ['-C', dir, 'status', '--porcelain', '--', 'src'])).stdout.trim() !== '';
    return `${sha}${dirty ? '+dirty src/' : ''}`;
  } catch {
    return 'unknown';
  }
}

/** Describes this machine and the commit of `repo`; bed versions are added once a bed ran. */
export async function describeMachine(repo: string): Promise<Machine> {
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
    commit: await commitOf(repo),
  };
}
