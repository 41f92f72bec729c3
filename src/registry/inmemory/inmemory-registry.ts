/**
 * In-memory registry for tests of everything above the backend boundary (plan, owner wrapper,
 * controller). It behaves like the etcd backend where that matters to callers: records are returned
 * whoever owns them, a create over an existing key overwrites it, a batch lands entirely or not at
 * all, and failures can be injected.
 */
import { entryKey } from '../../plan/plan.ts';
import type { Changes, Registry, RegistryEntry, Scope } from '../types.ts';

/** Registry operations a failure can be injected into. */
export type InMemoryOperation = 'records' | 'applyChanges';

interface InjectedFailure {
  readonly operation: InMemoryOperation;
  readonly error: Error;
  remaining: number;
}

/** The in-memory backend. Not for production: nothing is persisted and nothing expires. */
export class InMemoryRegistry implements Registry {
  readonly #entries = new Map<string, RegistryEntry>();
  readonly #failures: InjectedFailure[] = [];
  readonly #applied: Changes[] = [];
  #closed = false;

  /** Starts with `entries` in place, as if written earlier by anyone (including other owners). */
  constructor(entries: readonly RegistryEntry[] = []) {
    this.seed(...entries);
  }

  /** Every entry under `scope`, whoever owns it. */
  records(scope: Scope): Promise<RegistryEntry[]> {
    return this.#run('records', () =>
      [...this.#entries.values()].filter(
        (entry) => entry.registryNamespace === scope.registryNamespace && entry.endpoint.service === scope.service,
      ),
    );
  }

  /** Applies deletes, updates then creates; nothing is changed when the call fails. */
  applyChanges(changes: Changes): Promise<void> {
    return this.#run('applyChanges', () => {
      if (changes.updateOld.length !== changes.updateNew.length) {
        throw new Error(`invalid changes: ${changes.updateOld.length} updateOld but ${changes.updateNew.length} updateNew entries`);
      }
      for (const entry of changes.delete) this.#entries.delete(entryKey(entry));
      changes.updateOld.forEach((old, i) => {
        const next = changes.updateNew[i] as RegistryEntry;
        if (entryKey(old) !== entryKey(next)) this.#entries.delete(entryKey(old));
        this.#entries.set(entryKey(next), next);
      });
      for (const entry of changes.create) this.#entries.set(entryKey(entry), entry);
      this.#applied.push(changes);
    });
  }

  /** Marks the registry closed; later calls fail, as they would on a closed client. */
  close(): Promise<void> {
    this.#closed = true;
    return Promise.resolve();
  }

  /** Whether `close()` has been called. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Every stored entry, sorted by key; what a test asserts on. */
  entries(): RegistryEntry[] {
    return [...this.#entries.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, entry]) => entry);
  }

  /** Every successful `applyChanges` argument, oldest first, so tests can assert that nothing was written. */
  appliedChanges(): readonly Changes[] {
    return [...this.#applied];
  }

  /** Puts entries in place directly, bypassing ownership, like someone editing the registry by hand. */
  seed(...entries: RegistryEntry[]): void {
    for (const entry of entries) this.#entries.set(entryKey(entry), entry);
  }

  /** Removes an entry directly, like someone deleting it by hand. Returns whether it was there. */
  remove(entry: RegistryEntry): boolean {
    return this.#entries.delete(entryKey(entry));
  }

  /** Makes the next `times` calls of `operation` reject with `error` (default: once). */
  failNext(operation: InMemoryOperation, error: Error = new Error(`injected ${operation} failure`), times = 1): void {
    this.#failures.push({ operation, error, remaining: times });
  }

  /** Drops all injected failures that have not fired yet. */
  clearFailures(): void {
    this.#failures.length = 0;
  }

  #run<T>(operation: InMemoryOperation, body: () => T): Promise<T> {
    if (this.#closed) return Promise.reject(new Error(`in-memory registry is closed; ${operation} refused`));
    const failure = this.#failures.find((f) => f.operation === operation && f.remaining > 0);
    if (failure !== undefined) {
      failure.remaining -= 1;
      if (failure.remaining === 0) this.#failures.splice(this.#failures.indexOf(failure), 1);
      return Promise.reject(failure.error);
    }
    try {
      return Promise.resolve(body());
    } catch (err: unknown) {
      return Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
  }
}
