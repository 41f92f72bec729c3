/**
 * Loaded into every test file's process with `--import` (see package.json's test scripts). Once the
 * file's tests and its after() hooks are done, it
 *
 * - writes down which tests ran, into the ledger the runner's reporter checks (test-ledger.ts), and
 * - gives the process {@link EXIT_GRACE_MS} to exit on its own. A process that is still alive then
 *   is held by a handle some test or hook forgot to close: it prints what is still open and exits
 *   with a failure, so the file fails and names the leak instead of hanging `npm test` (the runner
 *   puts no deadline on a file once its tests are done).
 *
 * The runner's own process does not load `--import` modules; only test files' processes do.
 */
import { subscribe } from 'node:diagnostics_channel';
import { writeSync } from 'node:fs';
import { resolve } from 'node:path';
import { describeOpenResources } from './open-resources.ts';
import { LEDGER_DIR_ENV, writeLedgerEntry, type LedgerTest } from './test-ledger.ts';

/**
 * How long a test file's process may take to exit after its last hook. Everything a test opened is
 * closed by its hooks, which the runner awaits; what is left are sockets and processes already
 * closing, which take milliseconds.
 */
const EXIT_GRACE_MS = 20_000;

/** What node:test publishes on its `node.test` tracing channel for a test or suite. */
interface TestChannelContext {
  readonly name: string;
  readonly nesting: number;
  readonly type: 'test' | 'suite';
}

/** node:test's name for the implicit test that holds a file's top-level tests and hooks. */
const ROOT_TEST_NAME = '<root>';

const file = process.argv[1] === undefined ? undefined : resolve(process.argv[1]);
const ledgerDir = process.env[LEDGER_DIR_ENV];
const ran: LedgerTest[] = [];
let watchdog: NodeJS.Timeout | undefined;

// node:test publishes `end` on its `node.test` tracing channel once a test has finished, its
// after/afterEach hooks included; the root test's comes once every test and after() hook of the
// file is done.
subscribe('tracing:node.test:end', (message) => {
  const ctx = message as TestChannelContext;
  if (ctx.name === ROOT_TEST_NAME && ctx.nesting === 0) {
    fileDone();
  } else if (ctx.type === 'test') {
    ran.push({ name: ctx.name, nesting: ctx.nesting });
  }
});

function fileDone(): void {
  if (ledgerDir !== undefined && file !== undefined) writeLedgerEntry(ledgerDir, { file, pid: process.pid, tests: ran });
  watchdog ??= setTimeout(exitHeldOpen, EXIT_GRACE_MS).unref();
}

/** Reports what keeps the process alive and exits with a failure. */
function exitHeldOpen(): void {
  // Synchronous: this process exits right after, and its results went out long ago.
  writeSync(
    2,
    `test process for ${file ?? 'an unknown file'} was still alive ${EXIT_GRACE_MS} ms after its last test and hook: something left open keeps it running:\n${describeOpenResources()}\n`,
  );
  process.exit(1);
}
