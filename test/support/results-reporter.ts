/**
 * A node:test reporter that fails the run unless every test a test file's process ran reached the
 * runner. It pairs with test/support/test-process-preload.ts, which each test file's process loads
 * with `--import` and which writes down the tests the process ran into a ledger (test-ledger.ts):
 *
 *   node --test --import ./test/support/test-process-preload.ts \
 *     --test-reporter=spec --test-reporter-destination=stdout \
 *     --test-reporter=./test/support/results-reporter.ts --test-reporter-destination=stdout ...
 *
 * At the end of the run it compares, file by file, the ledger with the results the runner
 * received, prints one line saying how many tests were run and reported, and sets a failing exit
 * code when a file's process never finished its tests or a test it ran has no result.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { TestEvent } from 'node:test/reporters';
import { LEDGER_DIR_ENV, ledgerKey, readLedger, type LedgerEntry } from './test-ledger.ts';

/** Results the runner received for one test file. */
export interface FileResults {
  /** How many results each test (by {@link ledgerKey}) got. */
  readonly results: Map<string, number>;
  /** True when the runner failed the file itself (its process crashed or exited non-zero). */
  fileFailed: boolean;
}

/** The outcome of comparing the ledger with the results. */
export interface ResultsCheck {
  readonly ran: number;
  readonly reported: number;
  readonly files: number;
  /** One sentence per file whose results are incomplete; empty when every test was reported. */
  readonly problems: readonly string[];
}

/**
 * Compares what each file's process ran (`ledger`) with the results the runner received
 * (`received`, by absolute file path). Pure, so the rule is easy to read and to test.
 */
export function checkResults(ledger: readonly LedgerEntry[], received: ReadonlyMap<string, FileResults>): ResultsCheck {
  const byFile = new Map(ledger.map((e) => [e.file, e]));
  const problems: string[] = [];
  let ran = 0;
  let reported = 0;
  for (const [file, got] of received) {
    for (const n of got.results.values()) reported += n;
    const entry = byFile.get(file);
    if (entry === undefined) {
      problems.push(
        `${file}: its process never got to the end of its tests and after() hooks${got.fileFailed ? ' (the file failed)' : ', yet the file passed'}`,
      );
      continue;
    }
    ran += entry.tests.length;
    const left = new Map(got.results);
    const missing: string[] = [];
    for (const t of entry.tests) {
      const k = ledgerKey(t);
      const n = left.get(k) ?? 0;
      if (n > 0) left.set(k, n - 1);
      else missing.push(t.name);
    }
    if (missing.length > 0)
      problems.push(
        `${file}: ${missing.length} of the ${entry.tests.length} tests its process ran have no result: ${missing.map((m) => JSON.stringify(m.length > 120 ? `${m.slice(0, 120)}...` : m)).join(', ')}`,
      );
  }
  for (const file of byFile.keys()) if (!received.has(file)) problems.push(`${file}: its process ran tests the runner never heard of`);
  return { ran, reported, files: received.size, problems };
}

// The runner loads reporters before it starts any test file, and test files' processes inherit
// its environment when they start, so this is where the run's ledger is chosen.
const ledgerDir = mkdtempSync(join(tmpdir(), 'kube-registrar-test-ledger-'));
process.env[LEDGER_DIR_ENV] = ledgerDir;

/** The reporter itself: collects results, then yields the check's verdict and fails the run on a gap. */
// eslint-disable-next-line no-restricted-syntax -- node:test loads a reporter from its default export
export default async function* resultsReporter(source: AsyncIterable<TestEvent>): AsyncGenerator<string> {
  const received = new Map<string, FileResults>();
  const resultsOf = (file: string): FileResults => {
    let r = received.get(file);
    if (r === undefined) received.set(file, (r = { results: new Map(), fileFailed: false }));
    return r;
  };
  for await (const event of source) {
    if (event.type !== 'test:enqueue' && event.type !== 'test:pass' && event.type !== 'test:fail') continue;
    const { name, nesting, file } = event.data;
    if (file === undefined) continue;
    // The runner's own entry for a test file: named by the file's path, at the top.
    const isFile = nesting === 0 && resolve(name) === file;
    if (event.type === 'test:enqueue') {
      if (isFile) resultsOf(file);
    } else if (isFile) {
      if (event.type === 'test:fail') resultsOf(file).fileFailed = true;
    } else if (event.data.details.type !== 'suite') {
      const results = resultsOf(file).results;
      const k = ledgerKey({ name, nesting });
      results.set(k, (results.get(k) ?? 0) + 1);
    }
  }
  const check = checkResults(readLedger(ledgerDir), received);
  rmSync(ledgerDir, { recursive: true, force: true });
  const counts = `${check.ran} tests ran in ${check.files} test file(s), ${check.reported} results reported`;
  if (check.problems.length === 0) {
    yield `results check: every test that ran was reported (${counts})\n`;
    return;
  }
  process.exitCode = 1;
  yield `results check FAILED: results are missing (${counts})\n${check.problems.map((p) => `  ${p}\n`).join('')}`;
}
