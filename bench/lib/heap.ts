/**
 * Summarises a V8 heap snapshot (`.heapsnapshot`, written by `node --heapsnapshot-signal`) by
 * what holds the memory: shallow size per object type and constructor, and the number of
 * instances. Shallow sizes do not need the dominator tree, so this stays cheap on large heaps,
 * and the constructor names (Agent, TLSSocket, Object from parsed JSON, ...) are usually enough
 * to see what to slim.
 */
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';

interface HeapSnapshot {
  readonly snapshot: {
    readonly meta: { readonly node_fields: readonly string[]; readonly node_types: readonly (readonly string[] | string)[] };
  };
  readonly nodes: readonly number[];
  readonly strings: readonly string[];
}

/** Shallow size and count per `type:name`, biggest first, as text lines. */
export function summariseHeap(snap: HeapSnapshot, top = 25): string {
  const fields = snap.snapshot.meta.node_fields;
  const types = snap.snapshot.meta.node_types[0] as readonly string[];
  const width = fields.length;
  const iType = fields.indexOf('type');
  const iName = fields.indexOf('name');
  const iSize = fields.indexOf('self_size');
  const bySize = new Map<string, { size: number; count: number }>();
  let total = 0;
  for (let i = 0; i < snap.nodes.length; i += width) {
    const type = types[snap.nodes[i + iType] as number] ?? '?';
    const size = snap.nodes[i + iSize] as number;
    total += size;
    // Strings and code are grouped by type; objects by constructor.
    const key =
      type === 'object' || type === 'closure' || type === 'native'
        ? `${type}:${snap.strings[snap.nodes[i + iName] as number] ?? '?'}`
        : `(${type})`;
    const e = bySize.get(key) ?? { size: 0, count: 0 };
    e.size += size;
    e.count++;
    bySize.set(key, e);
  }
  const lines = [...bySize.entries()]
    .sort((a, b) => b[1].size - a[1].size)
    .slice(0, top)
    .map(([k, v]) => `  ${(v.size / 1e6).toFixed(1).padStart(7)} MB  ${String(v.count).padStart(9)} ×  ${k}`);
  return [`heap snapshot: ${(total / 1e6).toFixed(1)} MB in live objects (shallow sizes)`, ...lines].join('\n');
}

/** Summarises the newest `.heapsnapshot` in `dir`. */
export async function summariseHeapSnapshots(dir: string): Promise<string> {
  const files = (await readdir(dir)).filter((f) => f.endsWith('.heapsnapshot')).sort();
  const last = files[files.length - 1];
  if (last === undefined) return `no .heapsnapshot in ${dir}`;
  return `${last}\n${summariseHeap(JSON.parse(await readFile(join(dir, last), 'utf8')) as HeapSnapshot)}`;
}
