/**
 * What loading code costs before the operator does anything: for each set of modules, a fresh
 * Node process (with the image's runtime settings, src/runtime-settings.ts) imports them, collects
 * garbage, and reports process.memoryUsage() and RSS by kind from /proc/self/status.
 *
 *   node bench/import-cost.ts            # the sets below
 *   node bench/import-cost.ts some/module.ts @scope/pkg   # one set of your own
 *
 * "src/main.ts's imports" loads every module main.ts imports (main.ts itself would start the
 * operator), which is the memory the operator takes before its first request.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { RUNTIME_ENV, RUNTIME_NODE_FLAGS } from '../src/runtime-settings.ts';

const ROOT = join(import.meta.dirname, '..');

/** The specifiers main.ts imports, resolved against src/. */
function mainImports(): string[] {
  const text = readFileSync(join(ROOT, 'src', 'main.ts'), 'utf8');
  return [...text.matchAll(/^import\s+(?!type\b)[^'"]*['"]([^'"]+)['"]/gm)].map((m) => {
    const spec = m[1] ?? '';
    return spec.startsWith('.') ? pathToFileURL(join(ROOT, 'src', spec)).href : spec;
  });
}

/** The script each child runs: import, collect, measure, print one JSON line. */
const PROBE = `
const specs = JSON.parse(process.env.IMPORT_COST_SPECS);
const t0 = performance.now();
for (const s of specs) await import(s);
const ms = performance.now() - t0;
for (let i = 0; i < 3; i++) globalThis.gc();
await new Promise((r) => setTimeout(r, 200));
const m = process.memoryUsage();
const status = (await import('node:fs')).readFileSync('/proc/self/status', 'utf8');
const kib = (f) => Number(new RegExp('^' + f + ':\\\\s+(\\\\d+)', 'm').exec(status)?.[1]) * 1024;
console.log(JSON.stringify({ ms, rss: m.rss, heapUsed: m.heapUsed, heapTotal: m.heapTotal, external: m.external, arrayBuffers: m.arrayBuffers, rssAnon: kib('RssAnon'), rssFile: kib('RssFile') }));
`;

interface Cost {
  readonly ms: number;
  readonly rss: number;
  readonly heapUsed: number;
  readonly heapTotal: number;
  readonly external: number;
  readonly arrayBuffers: number;
  readonly rssAnon: number;
  readonly rssFile: number;
}

function measure(specs: readonly string[]): Cost {
  const nodeOptions = [RUNTIME_ENV['NODE_OPTIONS'] ?? '', '--expose-gc'].join(' ').trim();
  const out = execFileSync(process.execPath, [...RUNTIME_NODE_FLAGS, '--input-type=module', '-e', PROBE], {
    cwd: ROOT,
    env: { ...process.env, ...RUNTIME_ENV, NODE_OPTIONS: nodeOptions, IMPORT_COST_SPECS: JSON.stringify(specs) },
    encoding: 'utf8',
  });
  return JSON.parse(out.trim().split('\n').pop() ?? '{}') as Cost;
}

const SETS: Record<string, string[]> =
  process.argv.length > 2
    ? { 'given modules': process.argv.slice(2) }
    : {
        'nothing (node itself)': [],
        '@kubernetes/client-node (package root)': ['@kubernetes/client-node'],
        'src/kube/* (the client as the operator loads it)': [
          'client.ts',
          'api.ts',
          'kube-config.ts',
          'informer.ts',
          'custom-objects.ts',
          'events.ts',
        ].map((f) => pathToFileURL(join(ROOT, 'src', 'kube', f)).href),
        "src/main.ts's imports": mainImports(),
      };

const mb = (b: number): string => (b / 1e6).toFixed(1).padStart(6);
console.log('| modules | RSS | anon | file | heap used | heap reserved | external | array buffers | import time |');
console.log('|---|---|---|---|---|---|---|---|---|');
for (const [name, specs] of Object.entries(SETS)) {
  // Median of three fresh processes, by RSS.
  const runs = [measure(specs), measure(specs), measure(specs)].sort((a, b) => a.rss - b.rss);
  const c = runs[1] as Cost;
  console.log(
    `| ${name} | ${mb(c.rss)} | ${mb(c.rssAnon)} | ${mb(c.rssFile)} | ${mb(c.heapUsed)} | ${mb(c.heapTotal)} | ${mb(c.external)} | ${mb(c.arrayBuffers)} | ${c.ms.toFixed(0)} ms |`,
  );
}
