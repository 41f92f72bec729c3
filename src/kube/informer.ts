/**
 * A list-watch informer with a local cache, in the manner of client-go's reflector.
 *
 * The informer of @kubernetes/client-node keeps whole objects and stops on the first watch error;
 * this one keeps only what a `transform` retains (pods shrink to a few fields, which is what keeps
 * memory flat at tens of thousands of pods), lists in pages, asks for bookmarks, relists on
 * 410 Gone, and restarts until stopped. Restarts back off like the reflector's: a watch that lived
 * a healthy while and ended cleanly (its timeout, an idle connection) resumes at once; a failure, or
 * a watch that ends as soon as it started, waits an exponentially growing, jittered and capped
 * delay, which starts over once a watch has been healthy again. Without that, a server that closes
 * every watch at once, or answers it with an error status, would be asked again in a tight loop.
 */
import type { KubeConfig } from './client.ts';
import { watchOverHttp } from './transport.ts';
import type { Logger } from 'pino';
import { systemClock, type Clock } from '../clock.ts';

/** The metadata an informer needs from every object. */
export interface ObjectMeta {
  readonly name?: string;
  readonly namespace?: string;
  readonly resourceVersion?: string;
  readonly uid?: string;
}

/** Any Kubernetes object as cached. */
export interface CachedObject {
  readonly metadata?: ObjectMeta;
}

/** One page of a list call. */
export interface ListPage<T> {
  readonly items: readonly T[];
  readonly metadata?: { readonly resourceVersion?: string; readonly _continue?: string; readonly continue?: string };
}

/** Lists one page; `cont` is the continue token of the previous page. */
export type ListPageFn<T> = (limit: number, cont: string | undefined) => Promise<ListPage<T>>;

/**
 * Starts one watch, as client-node's `Watch.watch` does: `onEvent` gets every event, `done` is
 * called once when the watch ends (with the error, or null for a clean end), and the returned
 * controller aborts it.
 */
export type WatchFn = (
  path: string,
  params: Record<string, string | number | boolean>,
  onEvent: (phase: string, obj: unknown) => void,
  done: (err: unknown) => void,
) => Promise<AbortController>;

/** When an informer tries again after its list or watch ended. */
export interface InformerRetryPolicy {
  /** Delay after the first failure or quick end; it doubles with every further one. */
  readonly initialDelayMs: number;
  /** Cap of the delay, jitter included. */
  readonly maxDelayMs: number;
  /**
   * A watch that lived this long was healthy: the backoff starts over, and a clean end resumes at
   * once. Shorter than client-node's 30 s idle timeout, so a quiet watch that times out is healthy.
   */
  readonly healthyAfterMs: number;
}

/** Defaults of {@link InformerRetryPolicy}. */
export const DEFAULT_INFORMER_RETRY: InformerRetryPolicy = { initialDelayMs: 500, maxDelayMs: 30_000, healthyAfterMs: 10_000 };

/** Event handlers: `update` receives the previous cached object too. */
export interface InformerHandlers<T> {
  add?(obj: T): void;
  update?(obj: T, old: T): void;
  delete?(obj: T): void;
}

/** Options of {@link Informer}. */
export interface InformerOptions<Raw, T extends CachedObject> {
  /** Name for logs and metrics, e.g. `pods`. */
  readonly name: string;
  readonly kubeConfig: KubeConfig;
  /** Watch path, e.g. `/api/v1/pods` or `/apis/registrar.dev/v1alpha1/serviceinstances`. */
  readonly path: string;
  readonly list: ListPageFn<Raw>;
  /** Reduces a raw object to what the cache keeps. */
  readonly transform: (raw: Raw) => T;
  readonly logger: Logger;
  readonly pageSize?: number;
  readonly labelSelector?: string;
  readonly fieldSelector?: string;
  /** Called after each failure with the delay before the next try (for metrics). */
  readonly onError?: (err: unknown, retryInMs: number) => void;
  /** Starts a watch; defaults to {@link watchOverHttp} over `kubeConfig`. */
  readonly watch?: WatchFn;
  /** Defaults to the real clock. */
  readonly clock?: Clock;
  /** Defaults to {@link DEFAULT_INFORMER_RETRY}. */
  readonly retry?: Partial<InformerRetryPolicy>;
  /** Random source in [0, 1) for jitter; defaults to Math.random. */
  readonly random?: () => number;
}

/** `namespace/name`, or `name` for cluster-scoped objects. */
export function objectKey(obj: CachedObject): string {
  const ns = obj.metadata?.namespace;
  const name = obj.metadata?.name ?? '';
  return ns ? `${ns}/${name}` : name;
}

/**
 * The watch client aborts a watch that has been silent for 30 s with a TimeoutError; that and an
 * abort are routine ends, not failures to back off from.
 */
function isQuietEnd(err: unknown): boolean {
  const name = (err as { name?: unknown } | undefined)?.name;
  return name === 'AbortError' || name === 'TimeoutError';
}

function statusCode(err: unknown): number | undefined {
  const e = err as { statusCode?: unknown; code?: unknown; status?: unknown } | undefined;
  for (const v of [e?.statusCode, e?.code, e?.status]) if (typeof v === 'number') return v;
  return undefined;
}

/** The Status object of a watch ERROR event as an error, so it is logged and backed off like one. */
function watchStatusError(status: unknown): Error {
  const s = status as { code?: unknown; reason?: unknown; message?: unknown } | undefined;
  const code = typeof s?.code === 'number' ? s.code : undefined;
  const message = typeof s?.message === 'string' ? s.message : 'watch returned an ERROR event';
  const err = new Error(`watch ERROR event${code === undefined ? '' : ` ${code}`}: ${message}`) as Error & { statusCode?: number };
  if (code !== undefined) err.statusCode = code;
  return err;
}

/**
 * The reflector's backoff: each failure or quick end doubles the delay (jittered ±20 %, capped);
 * an attempt that lived `healthyAfterMs` starts it over, and if it also ended cleanly the next
 * attempt goes at once.
 */
class RestartBackoff {
  readonly #policy: InformerRetryPolicy;
  readonly #random: () => number;
  #failures = 0;

  constructor(policy: InformerRetryPolicy, random: () => number) {
    this.#policy = policy;
    this.#random = random;
  }

  /** Consecutive failures and quick ends so far. */
  get failures(): number {
    return this.#failures;
  }

  /** The delay before the next attempt, after one that lived `livedMs` and ended cleanly or not. */
  next(livedMs: number, failed: boolean): number {
    const { initialDelayMs, maxDelayMs, healthyAfterMs } = this.#policy;
    if (livedMs >= healthyAfterMs) {
      this.#failures = 0;
      if (!failed) return 0;
    }
    this.#failures++;
    const base = initialDelayMs * 2 ** Math.min(this.#failures - 1, 30);
    return Math.min(maxDelayMs, Math.round(base * (0.8 + 0.4 * this.#random())));
  }
}

/** The informer: cache plus handlers; `start()` resolves once the first list is in the cache. */
export class Informer<Raw, T extends CachedObject> {
  readonly #opts: InformerOptions<Raw, T>;
  readonly #cache = new Map<string, T>();
  readonly #byNamespace = new Map<string, Map<string, T>>();
  readonly #handlers: InformerHandlers<T>[] = [];
  readonly #watch: WatchFn;
  readonly #clock: Clock;
  readonly #random: () => number;
  readonly #backoff: RestartBackoff;
  #resourceVersion = '';
  #synced = false;
  #stopped = true;
  /** Counts list-watch attempts; callbacks of an attempt that is no longer current are ignored. */
  #attempt = 0;
  #abort: AbortController | undefined;
  #retryTimer: unknown;
  #firstSync: { resolve: () => void; reject: (e: unknown) => void; promise: Promise<void> } | undefined;

  constructor(opts: InformerOptions<Raw, T>) {
    this.#opts = opts;
    if (opts.watch) {
      this.#watch = opts.watch;
    } else {
      const kc = opts.kubeConfig;
      this.#watch = (path, params, onEvent, done) => watchOverHttp(kc, path, params, onEvent, done);
    }
    this.#clock = opts.clock ?? systemClock;
    this.#random = opts.random ?? Math.random;
    this.#backoff = new RestartBackoff({ ...DEFAULT_INFORMER_RETRY, ...opts.retry }, this.#random);
  }

  /** Registers handlers; they fire for every cache change after registration. */
  on(handlers: InformerHandlers<T>): void {
    this.#handlers.push(handlers);
  }

  /** True once the first list has been cached. */
  get synced(): boolean {
    return this.#synced;
  }

  /** The cached object by key (`namespace/name` or `name`). */
  get(key: string): T | undefined {
    return this.#cache.get(key);
  }

  /** Cached objects, of one namespace or of all. */
  list(namespace?: string): T[] {
    if (namespace === undefined) return [...this.#cache.values()];
    return [...(this.#byNamespace.get(namespace)?.values() ?? [])];
  }

  /** Number of cached objects. */
  get size(): number {
    return this.#cache.size;
  }

  /** Starts listing and watching; resolves after the first successful list. Errors keep retrying. */
  async start(): Promise<void> {
    if (!this.#stopped) return this.#firstSync?.promise;
    this.#stopped = false;
    let resolve!: () => void;
    let reject!: (e: unknown) => void;
    const promise = new Promise<void>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    this.#firstSync = { resolve, reject, promise };
    this.#run();
    return promise;
  }

  /** Stops watching and cancels retries; the cache stays readable. */
  stop(): void {
    this.#stopped = true;
    this.#attempt++;
    if (this.#retryTimer !== undefined) this.#clock.clearTimeout(this.#retryTimer);
    this.#retryTimer = undefined;
    this.#abort?.abort();
    this.#abort = undefined;
    this.#firstSync?.reject(new Error(`informer ${this.#opts.name} stopped before it synced`));
  }

  #run(): void {
    const attempt = ++this.#attempt;
    void this.#listAndWatch(attempt).catch((err: unknown) => {
      if (attempt === this.#attempt) this.#fail(err, 0);
    });
  }

  /** Runs the next attempt after `delayMs`, or at once for 0. */
  #restartAfter(delayMs: number): void {
    if (delayMs <= 0) {
      this.#run();
      return;
    }
    this.#retryTimer = this.#clock.setTimeout(() => {
      this.#retryTimer = undefined;
      this.#run();
    }, delayMs);
  }

  /** A list or watch failed after `livedMs`: back off (a 410 also makes the next attempt relist). */
  #fail(err: unknown, livedMs: number): void {
    if (this.#stopped) return;
    if (statusCode(err) === 410) this.#resourceVersion = '';
    const delay = this.#backoff.next(livedMs, true);
    this.#opts.logger.warn(
      { informer: this.#opts.name, err, failures: this.#backoff.failures, retryInMs: delay },
      'list/watch failed; retrying',
    );
    this.#opts.onError?.(err, delay);
    this.#restartAfter(delay);
  }

  async #listAndWatch(attempt: number): Promise<void> {
    if (!this.#resourceVersion) await this.#relist();
    if (this.#stopped || attempt !== this.#attempt) return;
    const params: Record<string, string | number | boolean> = {
      resourceVersion: this.#resourceVersion,
      allowWatchBookmarks: true,
      // A bounded watch keeps a half-open connection from hiding changes forever.
      timeoutSeconds: 300 + Math.floor(this.#random() * 60),
    };
    if (this.#opts.labelSelector) params['labelSelector'] = this.#opts.labelSelector;
    if (this.#opts.fieldSelector) params['fieldSelector'] = this.#opts.fieldSelector;
    const startedAt = this.#clock.now();
    let gone = false;
    let statusError: Error | undefined;
    let ended = false;
    const abort = await this.#watch(
      this.#opts.path,
      params,
      (phase: string, obj: unknown) => {
        if (ended || attempt !== this.#attempt) return;
        if (phase === 'ERROR') {
          // The server ends the watch after an ERROR event; what ended it decides the restart.
          if (statusCode(obj) === 410) gone = true;
          else statusError = watchStatusError(obj);
          return;
        }
        const raw = obj as Raw & CachedObject;
        const rv = raw.metadata?.resourceVersion;
        if (phase === 'BOOKMARK') {
          if (rv) this.#resourceVersion = rv;
          return;
        }
        if (phase === 'ADDED' || phase === 'MODIFIED') this.#upsert(this.#opts.transform(raw));
        else if (phase === 'DELETED') this.#remove(objectKey(raw));
        if (rv) this.#resourceVersion = rv;
      },
      (err: unknown) => {
        if (ended || attempt !== this.#attempt) return;
        ended = true;
        this.#abort = undefined;
        if (this.#stopped) return;
        this.#watchEnded(this.#clock.now() - startedAt, gone || statusCode(err) === 410, err && !isQuietEnd(err) ? err : statusError);
      },
    );
    // The watch may have ended before it was handed over (an error status answers at once).
    if (ended || attempt !== this.#attempt) return;
    if (this.#stopped) {
      abort.abort();
      return;
    }
    this.#abort = abort;
  }

  /** Decides how to go on after a watch that lived `livedMs` ended. */
  #watchEnded(livedMs: number, gone: boolean, err: unknown): void {
    if (gone) {
      this.#resourceVersion = '';
      const delay = this.#backoff.next(livedMs, false);
      this.#opts.logger.info({ informer: this.#opts.name, livedMs, retryInMs: delay }, 'watch expired (410 Gone); relisting');
      this.#restartAfter(delay);
    } else if (err) {
      this.#fail(err, livedMs);
    } else {
      // A bounded or idle watch ended: resume from the last resource version, at once if it had
      // been healthy, else after a delay, so a server that closes every watch at once is not
      // asked again in a tight loop.
      const delay = this.#backoff.next(livedMs, false);
      if (delay > 0)
        this.#opts.logger.info(
          { informer: this.#opts.name, livedMs, failures: this.#backoff.failures, retryInMs: delay },
          'watch ended quickly; resuming after a delay',
        );
      this.#restartAfter(delay);
    }
  }

  async #relist(): Promise<void> {
    const pageSize = this.#opts.pageSize ?? 500;
    const seen = new Set<string>();
    let cont: string | undefined;
    let rv = '';
    do {
      const page = await this.#opts.list(pageSize, cont);
      for (const raw of page.items) {
        const obj = this.#opts.transform(raw);
        seen.add(objectKey(obj));
        this.#upsert(obj);
      }
      cont = page.metadata?._continue ?? page.metadata?.continue ?? undefined;
      rv = page.metadata?.resourceVersion ?? rv;
    } while (cont && !this.#stopped);
    for (const key of [...this.#cache.keys()]) if (!seen.has(key)) this.#remove(key);
    this.#resourceVersion = rv;
    if (!this.#synced) {
      this.#synced = true;
      this.#opts.logger.debug({ informer: this.#opts.name, objects: this.#cache.size }, 'informer synced');
      this.#firstSync?.resolve();
    }
  }

  #upsert(obj: T): void {
    const key = objectKey(obj);
    const old = this.#cache.get(key);
    if (old && old.metadata?.resourceVersion === obj.metadata?.resourceVersion) return;
    this.#cache.set(key, obj);
    const ns = obj.metadata?.namespace ?? '';
    let nsMap = this.#byNamespace.get(ns);
    if (!nsMap) this.#byNamespace.set(ns, (nsMap = new Map<string, T>()));
    nsMap.set(key, obj);
    for (const h of this.#handlers) {
      if (old) h.update?.(obj, old);
      else h.add?.(obj);
    }
  }

  #remove(key: string): void {
    const old = this.#cache.get(key);
    if (!old) return;
    this.#cache.delete(key);
    const ns = old.metadata?.namespace ?? '';
    const nsMap = this.#byNamespace.get(ns);
    nsMap?.delete(key);
    if (nsMap?.size === 0) this.#byNamespace.delete(ns);
    for (const h of this.#handlers) h.delete?.(old);
  }
}
