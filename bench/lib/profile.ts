/**
 * Summarises a V8 CPU profile (`node --cpu-prof`) into what a reader needs to find the hot spot:
 * where the process spent its time by module (idle, GC, the operator's own code, each npm
 * package, Node internals), the functions with the most self time, and the operator's functions
 * with the most inclusive time.
 */
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';

interface CallFrame {
  readonly functionName: string;
  readonly url: string;
  readonly lineNumber: number;
}

interface ProfileNode {
  readonly id: number;
  readonly callFrame: CallFrame;
  readonly children?: readonly number[];
}

interface CpuProfile {
  readonly nodes: readonly ProfileNode[];
  readonly samples: readonly number[];
  readonly timeDeltas: readonly number[];
}

/** Code of this repository (src/, or dist/ compiled from it), as opposed to a package's own `src/` folder. */
function isOperatorCode(frame: CallFrame): boolean {
  return (frame.url.includes('/src/') || frame.url.includes('/dist/')) && !frame.url.includes('/node_modules/');
}

function moduleOf(frame: CallFrame): string {
  const url = frame.url;
  if (url === '') return frame.functionName.startsWith('(') ? frame.functionName : '(native)';
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (pkg) return pkg[1] as string;
  const src = /\/((?:src|dist)\/.*)$/.exec(url);
  if (src && isOperatorCode(frame)) return `src/${(src[1] as string).split('/')[1] ?? ''}`;
  if (url.startsWith('node:')) return 'node internals';
  return url;
}

function label(frame: CallFrame): string {
  const where =
    frame.url === ''
      ? ''
      : ` ${frame.url.replace(/^.*\/(node_modules|src|dist)\//, '$1/').replace(/^file:\/\//, '')}:${frame.lineNumber + 1}`;
  return `${frame.functionName || '(anonymous)'}${where}`;
}

/** Summarises one profile; `top` lines per list. */
export function summariseProfile(profile: CpuProfile, top = 15): string {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const self = new Map<number, number>();
  let total = 0;
  profile.samples.forEach((id, i) => {
    const dt = (profile.timeDeltas[i] ?? 0) / 1000;
    total += dt;
    self.set(id, (self.get(id) ?? 0) + dt);
  });
  const byModule = new Map<string, number>();
  const selfByFn = new Map<string, number>();
  const inclusiveSrc = new Map<string, number>();
  const nearestSrc = new Map<string, number>();
  for (const [id, ms] of self) {
    const node = byId.get(id);
    if (!node) continue;
    const mod = moduleOf(node.callFrame);
    byModule.set(mod, (byModule.get(mod) ?? 0) + ms);
    const l = label(node.callFrame);
    selfByFn.set(l, (selfByFn.get(l) ?? 0) + ms);
    // Inclusive time of the operator's own functions (walking up once per distinct function), and
    // self time charged to the innermost operator function on the stack: which of our calls
    // caused the library and runtime work below it.
    const seen = new Set<string>();
    let nearest: string | undefined;
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const f = byId.get(cur)?.callFrame;
      if (!f || !isOperatorCode(f)) continue;
      const fl = label(f);
      nearest ??= fl;
      if (seen.has(fl)) continue;
      seen.add(fl);
      inclusiveSrc.set(fl, (inclusiveSrc.get(fl) ?? 0) + ms);
    }
    if (!node.callFrame.functionName.startsWith('(')) {
      const key = nearest ?? '(no operator frame: timers, sockets, stream callbacks)';
      nearestSrc.set(key, (nearestSrc.get(key) ?? 0) + ms);
    }
  }
  const pct = (ms: number): string => `${((ms / total) * 100).toFixed(1).padStart(5)} %`;
  const list = (m: Map<string, number>): string[] =>
    [...m.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([k, ms]) => `  ${pct(ms)}  ${(ms / 1000).toFixed(1).padStart(6)} s  ${k}`);
  return [
    `profile: ${(total / 1000).toFixed(1)} s sampled`,
    'by module (self time):',
    ...list(byModule),
    'functions by self time:',
    ...list(selfByFn),
    "operator's functions by inclusive time:",
    ...list(inclusiveSrc),
    'busy time charged to the innermost operator function on the stack:',
    ...list(nearestSrc),
  ].join('\n');
}

/** Summarises every `.cpuprofile` in `dir` (normally one per operator process). */
export async function summariseProfiles(dir: string): Promise<string> {
  const files = (await readdir(dir)).filter((f) => f.endsWith('.cpuprofile'));
  const parts: string[] = [];
  for (const f of files) parts.push(`${f}\n${summariseProfile(JSON.parse(await readFile(join(dir, f), 'utf8')) as CpuProfile)}`);
  return parts.join('\n\n') || `no .cpuprofile in ${dir}`;
}
