/**
 * Turns results into what people read: a plain-text table on stdout and the generated blocks of
 * BENCHMARKS.md. Blocks sit between `<!-- bench:<id>:begin -->` and `<!-- bench:<id>:end -->`
 * markers, so a run replaces only the scenarios it ran and leaves hand-written sections (the
 * Consul heartbeat section) alone.
 */
import { readFile, writeFile } from 'node:fs/promises';
import type { Machine } from './machine.ts';
import { SCENARIOS } from './options.ts';
import { judge, type Figure, type ScenarioResult } from './results.ts';

/** A number as the report shows it: precision that fits its size, `n/a` when not measured. */
export function fmt(v: number | undefined): string {
  if (v === Number.POSITIVE_INFINITY) return '∞';
  if (v === undefined || !Number.isFinite(v)) return 'n/a';
  const a = Math.abs(v);
  if (a >= 1000) return Math.round(v).toLocaleString('en-US');
  if (a >= 100) return v.toFixed(0);
  if (a >= 10) return v.toFixed(1);
  if (a === 0) return '0';
  if (a < 0.01) return v.toPrecision(2);
  return v.toFixed(2);
}

function verdict(f: Figure): string {
  const j = judge(f);
  if (j.met === undefined) return '';
  return j.met ? 'goal met' : 'goal missed';
}

function ratioText(f: Figure): string {
  const j = judge(f);
  if (j.ratio === undefined) return '';
  const shown = fmt(j.ratio);
  // A ratio that rounds onto its goal's edge gets a third digit, so that it and the verdict agree
  // (0.498 is not 0.50 when the goal is ≥ 0.5).
  const g = f.goal;
  const edge =
    g === undefined || g.kind === 'zero' ? undefined : g.kind === 'ratio-at-least' || g.kind === 'ratio-at-most' ? g.threshold : 1;
  return edge !== undefined && j.ratio !== edge && shown === fmt(edge) ? j.ratio.toFixed(3) : shown;
}

function limitText(f: Figure): string {
  const j = judge(f);
  if (f.limit) return `${fmt(j.limitMedian)} ${f.limit.unit} (${f.limit.name})`;
  if (f.goal && f.goal.kind !== 'ratio-at-least' && f.goal.kind !== 'ratio-at-most') return f.goal.text;
  return '';
}

function row(f: Figure): string[] {
  const j = judge(f);
  return [
    f.case,
    f.name,
    f.unit ? `${fmt(j.median)} ${f.unit}` : fmt(j.median),
    f.runs.map(fmt).join(', '),
    limitText(f),
    ratioText(f),
    f.goal?.text ?? '',
    verdict(f),
  ];
}

const HEADER = ['case', 'figure', 'median', 'runs', 'limit', 'ratio', 'goal', 'verdict'];

/** The plain-text table of every scenario, for stdout. */
export function textTable(results: readonly ScenarioResult[]): string {
  const rows = [HEADER, ...results.flatMap((r) => r.figures.map(row))];
  const widths = HEADER.map((_, c) => Math.min(60, Math.max(...rows.map((r) => (r[c] ?? '').length))));
  const line = (r: string[]): string =>
    r
      .map((cell, c) => cell.padEnd(widths[c] ?? 0))
      .join('  ')
      .trimEnd();
  const out: string[] = [];
  for (const res of results) {
    out.push('', `== ${res.title}`, line(HEADER), line(widths.map((w) => '-'.repeat(w))));
    for (const f of res.figures) out.push(line(row(f)));
    for (const n of res.notes) out.push(`note: ${n}`);
  }
  return out.join('\n');
}

function mdEscape(s: string): string {
  return s.replace(/\|/g, '\\|');
}

/** The markdown block of one scenario. */
export function scenarioMarkdown(r: ScenarioResult, when: string, scale: string, repeats: number, commit: string): string {
  const goals = r.figures
    .filter((f) => f.goal)
    .map((f) => ({
      scenario: r.title,
      case: f.case,
      figure: f.name,
      median: f.unit ? `${fmt(judge(f).median)} ${f.unit}` : fmt(judge(f).median),
      ratio: ratioText(f),
      goal: f.goal?.text ?? '',
      verdict: verdict(f),
    }));
  const lines = [
    `## ${r.title}`,
    '',
    `Measured ${when} (commit ${commit}), ${scale === 'full' ? 'full scale' : '**small scale (development figures, not the sizes the issue asks for)**'}, ${repeats} run(s) per case; medians over the runs.`,
    '',
    ...r.setup.map((s) => `- ${s}`),
    '',
    '| case | figure | median | runs | limit | ratio | goal | verdict |',
    '|---|---|---|---|---|---|---|---|',
    ...r.figures.map((f) => `| ${row(f).map(mdEscape).join(' | ')} |`),
    '',
  ];
  if (r.notes.length > 0) lines.push(...r.notes.map((n) => `> ${n}`), '');
  if (r.profile) lines.push('<details><summary>Profile of the operator</summary>', '', '```', r.profile, '```', '', '</details>', '');
  lines.push(`<!-- bench:goals ${JSON.stringify(goals)} -->`);
  return lines.join('\n');
}

/** The machine and reproduction block. */
export function machineMarkdown(m: Machine, when: string): string {
  const v = m.versions;
  return [
    '## How these figures were made',
    '',
    `Last run ${when} on: ${m.cpus} vCPU (${m.cpuModel}), ${m.memoryGiB} GiB memory, Linux ${m.kernel}, Node ${m.node}` +
      (v ? `; kube-apiserver ${v.kubernetes}, etcd ${v.etcd}, Consul ${v.consul}, ZooKeeper ${v.zookeeper}` : '') +
      `; commit ${m.commit}` +
      `. Load average when the run started: ${m.loadAverageAtStart} (the machine is shared: other jobs run meanwhile, which is why every figure with a limit is also given as a ratio to that limit measured in the same run).`,
    '',
    'Everything runs on this one machine: the test bed (kube-apiserver with its own etcd, the registry etcd, a Consul dev agent, all on loopback), the operator as its own process (`node dist/main.js`, compiled by tsc at the start of each run as the image build does, with the image’s `NODE_ENV=production` and memory settings, `src/runtime-settings.ts`; its CPU and RSS read from /proc), and the harness that creates objects and timestamps what it sees.',
    '',
    'Reproduce:',
    '',
    '```sh',
    'npm ci',
    'npm run testbed -- provision           # builds/installs the servers once',
    'npm run bench                          # every scenario, full scale, 3 runs each (takes hours on 2 vCPU)',
    `npm run bench -- --only=cold-sync      # one scenario (ids: ${SCENARIOS.join(', ')})`,
    'npm run bench -- --scale=small         # 100s of objects, 1 run, churn 30 s: checks the harness in minutes',
    'npm run bench -- --only=cold-sync --profile   # also write and summarise a CPU profile of the operator',
    '```',
    '',
    'Every run prints the table, writes all raw figures to `bench/results/<timestamp>.json` and rewrites the blocks of the scenarios it ran below.',
  ].join('\n');
}

interface GoalRow {
  readonly scenario: string;
  readonly case: string;
  readonly figure: string;
  readonly median: string;
  readonly ratio: string;
  readonly goal: string;
  readonly verdict: string;
}

function summaryMarkdown(doc: string): string {
  const rows: GoalRow[] = [];
  for (const m of doc.matchAll(/<!-- bench:goals (.*) -->/g)) rows.push(...(JSON.parse(m[1] as string) as GoalRow[]));
  return [
    '## Goals at a glance',
    '',
    'Collected from the scenario sections below (each says when and at which scale it was measured).',
    '',
    '| scenario | case | figure | median | ratio | goal | verdict |',
    '|---|---|---|---|---|---|---|',
    ...rows.map(
      (r) =>
        `| ${[r.scenario, r.case, r.figure, r.median, r.ratio, r.goal, r.verdict === 'goal missed' ? '**goal missed**' : r.verdict].map(mdEscape).join(' | ')} |`,
    ),
  ].join('\n');
}

function replaceBlock(doc: string, id: string, body: string, before: string): string {
  const begin = `<!-- bench:${id}:begin -->`;
  const end = `<!-- bench:${id}:end -->`;
  const block = `${begin}\n${body}\n${end}`;
  const i = doc.indexOf(begin);
  const j = doc.indexOf(end);
  if (i >= 0 && j > i) return doc.slice(0, i) + block + doc.slice(j + end.length);
  const at = doc.indexOf(before);
  return at >= 0 ? `${doc.slice(0, at)}${block}\n\n${doc.slice(at)}` : `${doc.trimEnd()}\n\n${block}\n`;
}

/**
 * Rewrites the generated blocks of BENCHMARKS.md: machine, one per scenario that ran, and the
 * summary of goals. New blocks go before the hand-written Consul section, in scenario order.
 */
export async function updateBenchmarksMd(
  path: string,
  machine: Machine,
  results: readonly ScenarioResult[],
  when: string,
  scale: string,
  repeats: number,
  order: readonly string[],
): Promise<void> {
  let doc = await readFile(path, 'utf8').catch(() => '# Benchmarks\n');
  const handWritten = '## Consul backend: HTTP calls per heartbeat interval';
  doc = replaceBlock(doc, 'machine', machineMarkdown(machine, when), handWritten);
  for (const id of order) {
    const r = results.find((x) => x.id === id);
    if (r) doc = replaceBlock(doc, `scenario:${id}`, scenarioMarkdown(r, when, scale, repeats, machine.commit), handWritten);
    else if (!doc.includes(`<!-- bench:scenario:${id}:begin -->`))
      doc = replaceBlock(doc, `scenario:${id}`, `## ${id}\n\nNot measured yet: \`npm run bench -- --only=${id}\`.`, handWritten);
  }
  doc = replaceBlock(doc, 'summary', summaryMarkdown(doc), '<!-- bench:machine:begin -->');
  await writeFile(path, doc);
}
