/**
 * A list-watch informer with a local cache, in the manner of client-go's reflector.
 *
 * The informer of @kubernetes/client-node keeps whole objects and stops on the first watch error;
 * this one keeps only what a `transform` retains (pods shrink to a few fields, which is what keeps
 * memory flat at tens of thousands of pods), lists in pages, asks for bookmarks, relists on
 * 410 Gone, and restarts after any error with exponential backoff and jitter until stopped.
 */
import { Watch, type KubeConfig } from '@kubernetes/client-node';
import type { Logger } from 'pino';

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

/** The informer: cache plus handlers; `start()` resolves once the first list is in the cache. */
export class Informer<Raw, T extends CachedObject> {
  readonly #opts: InformerOptions<Raw, T>;
  readonly #cache = new Map<string, T>();
  readonly #byNamespace = new Map<string, Map<string, T>>();
  readonly #handlers: InformerHandlers<T>[] = [];
  readonly #watch: Watch;
  #resourceVersion = '';
  #synced = false;
  #stopped = true;
  #abort: AbortController | undefined;
  #retryTimer: NodeJS.Timeout | undefined;
  #failures = 0;
  #firstSync: { resolve: () => void; reject: (e: unknown) => void; promise: Promise<void> } | undefined;

  constructor(opts: InformerOptions<Raw, T>) {
    this.#opts = opts;
    this.#watch = new Watch(opts.kubeConfig);
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
    if (this.#retryTimer) clearTimeout(this.#retryTimer);
    this.#retryTimer = undefined;
    this.#abort?.abort();
    this.#abort = undefined;
    this.#firstSync?.reject(new Error(`informer ${this.#opts.name} stopped before it synced`));
  }

  #run(): void {
    void this.#listAndWatch().catch((err: unknown) => this.#fail(err));
  }

  #fail(err: unknown): void {
    if (this.#stopped) return;
    if (statusCode(err) === 410) this.#resourceVersion = '';
    this.#failures++;
    const base = Math.min(30_000, 500 * 2 ** Math.min(this.#failures - 1, 10));
    const delay = Math.round(base * (0.8 + 0.4 * Math.random()));
    this.#opts.logger.warn({ informer: this.#opts.name, err, retryInMs: delay }, 'list/watch failed; retrying');
    this.#opts.onError?.(err, delay);
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined;
      this.#run();
    }, delay);
  }

  async #listAndWatch(): Promise<void> {
    if (!this.#resourceVersion) await this.#relist();
    if (this.#stopped) return;
    const params: Record<string, string | number | boolean> = {
      resourceVersion: this.#resourceVersion,
      allowWatchBookmarks: true,
      // A bounded watch keeps a half-open connection from hiding changes forever.
      timeoutSeconds: 300 + Math.floor(Math.random() * 60),
    };
    if (this.#opts.labelSelector) params['labelSelector'] = this.#opts.labelSelector;
    if (this.#opts.fieldSelector) params['fieldSelector'] = this.#opts.fieldSelector;
    let gone = false;
    this.#abort = await this.#watch.watch(
      this.#opts.path,
      params,
      (phase: string, obj: unknown) => {
        if (phase === 'ERROR') {
          const code = (obj as { code?: number }).code;
          if (code === 410) gone = true;
          return;
        }
        this.#failures = 0;
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
        this.#abort = undefined;
        if (this.#stopped) return;
        if (gone) {
          this.#resourceVersion = '';
          this.#opts.logger.info({ informer: this.#opts.name }, 'watch expired (410 Gone); relisting');
          this.#run();
        } else if (err && !isQuietEnd(err)) {
          this.#fail(err);
        } else {
          // Normal end of a bounded or idle watch: resume from the last resource version.
          this.#run();
        }
      },
    );
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
    this.#failures = 0;
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
