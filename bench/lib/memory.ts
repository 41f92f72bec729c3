/**
 * Where a process's resident memory is, read from outside: /proc/<pid>/status splits RSS into
 * anonymous memory (V8's heap, malloc, thread stacks) and file-backed pages (the node binary and
 * shared libraries), and /proc/<pid>/smaps tells the brk heap (main-thread malloc) from other
 * anonymous mappings. With the V8 heap figures of the operator's /metrics beside them, this says
 * how much of RSS the JS heap explains and how much is native.
 */
import { readFile, writeFile } from 'node:fs/promises';

/** Resident memory of a process by kind, in MB (10^6 bytes). */
export interface MemoryComposition {
  readonly rssMB: number;
  /** Anonymous pages: V8 heap, malloc arenas, stacks. */
  readonly rssAnonMB: number;
  /** File-backed pages: code of node and its libraries. */
  readonly rssFileMB: number;
  /** The brk heap: what the main thread's malloc arena holds. */
  readonly brkHeapMB: number;
  /** Anonymous mappings other than the brk heap and stacks: V8's pages and the other malloc arenas. */
  readonly anonMappingsMB: number;
}

const KB = 1024 / 1e6;

function statusKiB(status: string, field: string): number {
  return Number(new RegExp(`^${field}:\\s+(\\d+)`, 'm').exec(status)?.[1] ?? Number.NaN);
}

/** Reads the composition of `pid`'s resident memory from /proc. */
export async function readMemoryComposition(pid: number): Promise<MemoryComposition> {
  const [status, smaps] = await Promise.all([readFile(`/proc/${pid}/status`, 'utf8'), readFile(`/proc/${pid}/smaps`, 'utf8')]);
  let brk = 0;
  let anon = 0;
  let name = '';
  let inode = '0';
  for (const line of smaps.split('\n')) {
    const header = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ (\d+)\s*(.*)$/.exec(line);
    if (header) {
      inode = header[1] ?? '0';
      name = header[2] ?? '';
      continue;
    }
    const rss = /^Rss:\s+(\d+) kB/.exec(line);
    if (!rss) continue;
    const kib = Number(rss[1]);
    if (name === '[heap]') brk += kib;
    else if (inode === '0' && (name === '' || name.startsWith('[anon'))) anon += kib;
  }
  return {
    rssMB: statusKiB(status, 'VmRSS') * KB,
    rssAnonMB: statusKiB(status, 'RssAnon') * KB,
    rssFileMB: statusKiB(status, 'RssFile') * KB,
    brkHeapMB: brk * KB,
    anonMappingsMB: anon * KB,
  };
}

/** The V8 figures of prom-client's default metrics (prefixed `kube_registrar_`), in MB. */
export interface V8Figures {
  readonly heapUsedMB: number;
  readonly heapTotalMB: number;
  readonly externalMB: number;
  /** Per heap space (new, old, code, large_object, ...): used and reserved. */
  readonly spaces: Readonly<Record<string, { readonly usedMB: number; readonly sizeMB: number }>>;
}

/** Parses the V8 figures out of a Prometheus text exposition of the operator's /metrics. */
export function v8Figures(metricsText: string): V8Figures {
  const value = (name: string): number => {
    const m = new RegExp(`^${name}\\s+(\\S+)$`, 'm').exec(metricsText);
    return m ? Number(m[1]) / 1e6 : Number.NaN;
  };
  const spaces: Record<string, { usedMB: number; sizeMB: number }> = {};
  for (const m of metricsText.matchAll(/^kube_registrar_nodejs_heap_space_size_(used|total)_bytes\{space="([^"]+)"\}\s+(\S+)$/gm)) {
    const space = m[2] ?? '?';
    const e = (spaces[space] ??= { usedMB: 0, sizeMB: 0 });
    if (m[1] === 'used') e.usedMB = Number(m[3]) / 1e6;
    else e.sizeMB = Number(m[3]) / 1e6;
  }
  return {
    heapUsedMB: value('kube_registrar_nodejs_heap_size_used_bytes'),
    heapTotalMB: value('kube_registrar_nodejs_heap_size_total_bytes'),
    externalMB: value('kube_registrar_nodejs_external_memory_bytes'),
    spaces,
  };
}

/** One line for logs. */
export function describeMemory(m: MemoryComposition, v: V8Figures): string {
  const f = (x: number): string => x.toFixed(0);
  const spaces = Object.entries(v.spaces)
    .filter(([, s]) => s.sizeMB >= 1)
    .map(([k, s]) => `${k.replace(/_space$/, '')} ${f(s.usedMB)}/${f(s.sizeMB)}`)
    .join(', ');
  return (
    `RSS ${f(m.rssMB)} MB (anon ${f(m.rssAnonMB)}: brk ${f(m.brkHeapMB)} + mappings ${f(m.anonMappingsMB)}; file ${f(m.rssFileMB)}); ` +
    `V8 heap ${f(v.heapUsedMB)} used / ${f(v.heapTotalMB)} reserved (${spaces}); external ${f(v.externalMB)}; ` +
    `native (RSS − heap reserved) ${f(m.rssMB - v.heapTotalMB)} MB`
  );
}

/** Keeps `pid`'s /proc/<pid>/smaps as `file`, for a mapping-by-mapping look afterwards. */
export async function saveSmaps(pid: number, file: string): Promise<void> {
  // Read, not copied: /proc files report a size of 0.
  await writeFile(file, await readFile(`/proc/${pid}/smaps`, 'utf8'));
}
