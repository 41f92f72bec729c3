/**
 * The ledger that lets `npm test` prove every test it ran was reported. Each test file runs in a
 * child process that streams its results to the runner over a pipe; results still in that pipe
 * when the child exits early are lost without a trace (nodejs/node#64833), and the run can still
 * pass. So each child also writes down, synchronously, the tests it ran (test/support/
 * test-process-preload.ts) and the runner's reporter (test/support/results-reporter.ts) compares
 * that list with the results it received.
 */
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** Environment variable naming the run's ledger directory; the reporter sets it, children inherit it. */
export const LEDGER_DIR_ENV = 'KUBE_REGISTRAR_TEST_LEDGER';

/** One test as both sides see it: its name and depth (names alone repeat across suites). */
export interface LedgerTest {
  readonly name: string;
  readonly nesting: number;
}

/** What one test file's process ran, written once all its tests and hooks have finished. */
export interface LedgerEntry {
  /** Absolute path of the test file. */
  readonly file: string;
  readonly pid: number;
  /** Every test (not suite) that ran to an outcome, in the order it finished. */
  readonly tests: readonly LedgerTest[];
}

/** Writes `entry` into the ledger at `dir`, synchronously: it must survive an exit right after. */
export function writeLedgerEntry(dir: string, entry: LedgerEntry): void {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, `${entry.pid}.json`), JSON.stringify(entry));
}

/** Every entry in the ledger at `dir` (none if the directory does not exist). */
export function readLedger(dir: string): LedgerEntry[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (err: unknown) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new Error(`cannot read the test ledger ${dir}`, { cause: err });
  }
  return names.filter((n) => n.endsWith('.json')).map((n) => JSON.parse(readFileSync(join(dir, n), 'utf8')) as LedgerEntry);
}

/** A key that tells tests apart as far as their reports allow. */
export function ledgerKey(test: LedgerTest): string {
  return `${test.nesting}\u0000${test.name}`;
}
