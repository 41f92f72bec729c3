/**
 * What holds a V8 heap snapshot's memory, by retained size: the dominator tree of the snapshot
 * (Cooper, Harvey and Kennedy's iterative algorithm over a depth-first post-order), then the
 * objects held directly by the GC roots summed by constructor, and the largest single holders.
 * Objects reachable along two paths (a pod in an informer and in an index) are held by the roots.
 *
 *   node bench/heap-retained.ts <file.heapsnapshot> [top]
 *
 * Snapshots come from `npm run bench -- --only=steady-state --heap-snapshot` (bench/results/<run>/heap-steady-state/).
 */
import { readFileSync } from 'node:fs';

interface Snapshot {
  readonly snapshot: { readonly meta: { node_fields: string[]; node_types: [string[]]; edge_fields: string[]; edge_types: [string[]] } };
  readonly nodes: number[];
  readonly edges: number[];
  readonly strings: string[];
}

const [file, topArg] = process.argv.slice(2);
if (!file) {
  console.error('usage: node bench/heap-retained.ts <file.heapsnapshot> [top]');
  process.exit(2);
}
const top = Number(topArg ?? 30);
const snap = JSON.parse(readFileSync(file, 'utf8')) as Snapshot;
const meta = snap.snapshot.meta;
const NW = meta.node_fields.length;
const EW = meta.edge_fields.length;
const [types] = meta.node_types;
const iType = meta.node_fields.indexOf('type');
const iName = meta.node_fields.indexOf('name');
const iSize = meta.node_fields.indexOf('self_size');
const iEdges = meta.node_fields.indexOf('edge_count');
const eType = meta.edge_fields.indexOf('type');
const eTo = meta.edge_fields.indexOf('to_node');
const weak = meta.edge_types[0].indexOf('weak');
const { nodes, edges, strings } = snap;
const N = nodes.length / NW;
const at = (i: number): number => nodes[i] as number;

const firstEdge = new Uint32Array(N + 1);
for (let v = 0, e = 0; v < N; v++) {
  firstEdge[v] = e;
  e += at(v * NW + iEdges) * EW;
  firstEdge[v + 1] = e;
}
const targets = (v: number, visit: (w: number) => void): void => {
  for (let e = firstEdge[v] as number; e < (firstEdge[v + 1] as number); e += EW)
    if (edges[e + eType] !== weak) visit((edges[e + eTo] as number) / NW);
};

// Post-order of a depth-first walk from the root (node 0).
const post = new Int32Array(N).fill(-1);
const order: number[] = [];
const reached = new Uint8Array(N);
const cursor = new Uint32Array(N);
const stack = [0];
reached[0] = 1;
while (stack.length > 0) {
  const v = stack[stack.length - 1] as number;
  let next = -1;
  for (let e = (firstEdge[v] as number) + (cursor[v] as number) * EW; e < (firstEdge[v + 1] as number); e += EW) {
    cursor[v] = (cursor[v] as number) + 1;
    if (edges[e + eType] === weak) continue;
    const w = (edges[e + eTo] as number) / NW;
    if (!reached[w]) {
      next = w;
      break;
    }
  }
  if (next >= 0) {
    reached[next] = 1;
    stack.push(next);
  } else {
    stack.pop();
    post[v] = order.length;
    order.push(v);
  }
}
const preds: number[][] = Array.from({ length: N }, () => []);
for (const v of order) targets(v, (w) => (preds[w] as number[]).push(v));

const idom = new Int32Array(N).fill(-1);
idom[0] = 0;
const intersect = (a: number, b: number): number => {
  while (a !== b) {
    while ((post[a] as number) < (post[b] as number)) a = idom[a] as number;
    while ((post[b] as number) < (post[a] as number)) b = idom[b] as number;
  }
  return a;
};
for (let changed = true; changed;) {
  changed = false;
  for (let k = order.length - 1; k >= 0; k--) {
    const v = order[k] as number;
    if (v === 0) continue;
    let dom = -1;
    for (const u of preds[v] as number[]) if (idom[u] !== -1) dom = dom === -1 ? u : intersect(u, dom);
    if (dom !== -1 && idom[v] !== dom) {
      idom[v] = dom;
      changed = true;
    }
  }
}
const retained = new Float64Array(N);
for (let v = 0; v < N; v++) retained[v] = at(v * NW + iSize);
for (const v of order) {
  const d = idom[v] as number;
  if (v !== 0 && d >= 0) retained[d] = (retained[d] as number) + (retained[v] as number);
}

const typeOf = (v: number): string => types[at(v * NW + iType)] ?? '?';
const nameOf = (v: number): string => `${typeOf(v)}:${(strings[at(v * NW + iName)] ?? '').slice(0, 60).replace(/\s+/g, ' ')}`;
const mb = (bytes: number): string => (bytes / 1e6).toFixed(2).padStart(8);
console.log(`${file}: ${mb(retained[0] as number).trim()} MB retained from the roots`);

console.log('\nheld directly by the roots, by constructor (MB, objects):');
const byName = new Map<string, { bytes: number; count: number }>();
for (const v of order) {
  if (v === 0 || typeOf(v) === 'synthetic' || typeOf(idom[v] as number) !== 'synthetic') continue;
  const sum = byName.get(nameOf(v)) ?? { bytes: 0, count: 0 };
  sum.bytes += retained[v] as number;
  sum.count++;
  byName.set(nameOf(v), sum);
}
for (const [name, { bytes, count }] of [...byName].sort((a, b) => b[1].bytes - a[1].bytes).slice(0, top))
  console.log(`${mb(bytes)} ${String(count).padStart(8)}  ${name}`);

console.log('\nlargest single holders (MB, held by):');
const holders = order.filter((v) => typeOf(v) !== 'synthetic').sort((a, b) => (retained[b] as number) - (retained[a] as number));
for (const v of holders.slice(0, top)) console.log(`${mb(retained[v] as number)}  ${nameOf(v)}  ← ${nameOf(idom[v] as number)}`);
