/**
 * node-zookeeper-client's `Exception.create` throws `Error('Unknown code: …')` for any error code
 * missing from its 2013 table, which lacks everything from -118 SESSION_MOVED on. It is called
 * inside the socket's `data` handler, so one such answer from a server (SESSION_MOVED is realistic
 * when a session is adopted on another server of an ensemble) would throw out of an event handler
 * and kill the operator. The patch below makes the factory build an ordinary library Exception
 * (same prototype, `getCode()` returns the server's code) for codes it does not know, so the
 * request fails with that code like any other and the adapter maps it to a typed error.
 */
import { zooKeeperCodeName } from './errors.ts';
import { EXCEPTION_MODULE, type ExceptionModule } from './internals.ts';

const PATCHED = Symbol.for('kube-registrar.zookeeper.tolerantExceptionCreate');

/** Whether the library's own table knows `code` (its constructor throws for the others). */
function knownToLibrary(module: ExceptionModule, code: number): boolean {
  return Object.keys(module).some((key) => /^[A-Z_]+$/.test(key) && module[key] === code);
}

/**
 * Replaces `Exception.create` of the given library module (the installed one by default) with a
 * version that never throws for an unknown code. Idempotent.
 */
export function installTolerantExceptionFactory(module: ExceptionModule = EXCEPTION_MODULE): void {
  const marked = module as ExceptionModule & { [PATCHED]?: true };
  if (marked[PATCHED]) return;
  const original = module.create.bind(module);
  const tolerantCreate = (code: unknown, path?: string): unknown => {
    const numeric = typeof code === 'number' && Number.isInteger(code) ? code : Number.NaN;
    if (!Number.isNaN(numeric) && knownToLibrary(module, numeric)) return original(numeric, path);
    // Built without the library constructor, which would validate the code and throw again.
    const exception = Object.create(module.prototype) as Error & { code: number; path: string | undefined };
    Error.captureStackTrace(exception, tolerantCreate);
    exception.code = Number.isNaN(numeric) ? -1 : numeric;
    exception.name = zooKeeperCodeName(exception.code);
    exception.path = path;
    exception.message = `Exception: ${exception.name}[${String(code)}]${path ? `@${path}` : ''}`;
    return exception;
  };
  module.create = tolerantCreate as ExceptionModule['create'];
  marked[PATCHED] = true;
}
