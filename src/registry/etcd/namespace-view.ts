/**
 * A view of one registry namespace in etcd, from one range read of the whole namespace (entries
 * and owner index), kept current by every write of this backend that lands, and read again once
 * it is older than the backend's view age.
 *
 * Scope reads are served from it: a cold start or the recovery after an outage reads each
 * namespace once instead of once per ServiceInstance, and resyncs cost one read per namespace
 * per view age instead of one per ServiceInstance. What others wrote since the read (a hand edit,
 * another cluster's entry) shows in the next view; until then every write is still guarded by the
 * revision the view holds, so a write planned on an outdated view fails instead of overwriting or
 * deleting what someone else wrote, and the view is dropped so the retry reads afresh.
 */
import type { StoredKeyValue, TxnWrite } from './client.ts';

/**
 * The keys of one service by key: entry keys and owner-index keys together (they differ by prefix),
 * one map per service rather than two, most services having no owner-index keys.
 */
type ServiceKeys = Map<string, StoredKeyValue>;

/** What a view hands a scope read: the keys under the service's entry and owner-index prefixes. */
export interface ServiceSnapshot {
  readonly values: readonly StoredKeyValue[];
  readonly index: readonly StoredKeyValue[];
}

const NONE: readonly StoredKeyValue[] = Object.freeze([]);
const EMPTY: ServiceSnapshot = { values: NONE, index: NONE };

/** The service a key under `prefix` belongs to, when the key is `<prefix><service>/<child>`. */
function serviceOf(prefix: string, key: string): string | undefined {
  if (!key.startsWith(prefix)) return undefined;
  const rest = key.slice(prefix.length);
  const slash = rest.indexOf('/');
  if (slash <= 0 || slash === rest.length - 1 || rest.indexOf('/', slash + 1) !== -1) return undefined;
  return rest.slice(0, slash);
}

/** One namespace's keys as last read, with this backend's writes since applied. */
export class NamespaceView {
  readonly #valuePrefix: string;
  readonly #indexPrefix: string;
  readonly #services = new Map<string, ServiceKeys>();
  #takenAt = Number.NEGATIVE_INFINITY;
  #remembered: ReadonlyMap<string, string> = new Map();

  /**
   * An empty view, to be filled by {@link refresh}. `valuePrefix` is `<prefix>/<ns>/`,
   * `indexPrefix` `<prefix>/_kube-registrar/owners/<ns>/`.
   */
  constructor(valuePrefix: string, indexPrefix: string) {
    this.#valuePrefix = valuePrefix;
    this.#indexPrefix = indexPrefix;
  }

  /** When the read the view holds was made, in ms since the epoch (-Infinity before the first). */
  get takenAt(): number {
    return this.#takenAt;
  }

  /**
   * Makes the view hold a new read of the namespace (`values` and `index`: what one read under each
   * prefix held), in place: a key the read left out is dropped, and a service whose keys did not
   * change keeps its maps. A refresh of an unchanged namespace so allocates nothing that lives on
   * (with the client's reuse of unchanged keys, see {@link held}); building a new view each time
   * left two maps per service and every key's copy for the old generation to collect, some 1.3 MB
   * per 1,000 services at every refresh. Transactions that landed while the read ran are applied
   * after it, by whoever read.
   */
  refresh(
    values: readonly StoredKeyValue[],
    index: readonly StoredKeyValue[],
    takenAt: number,
    remembered: ReadonlyMap<string, string>,
  ): this {
    this.#takenAt = takenAt;
    this.#remembered = remembered;
    let read = 0;
    for (const kvs of [values, index])
      for (const kv of kvs) {
        const keys = this.#keysOf(kv.key);
        if (!keys) continue;
        read++;
        if (keys.get(kv.key) !== kv) keys.set(kv.key, kv);
      }
    // Every key read is held now: the view holds more only when the read left something out.
    let held = 0;
    for (const keys of this.#services.values()) held += keys.size;
    if (held > read) {
      const readKeys = new Set<string>();
      for (const kvs of [values, index]) for (const kv of kvs) readKeys.add(kv.key);
      for (const keys of [...this.#services.values()]) for (const key of [...keys.keys()]) if (!readKeys.has(key)) this.#delete(key);
    }
    return this;
  }

  /**
   * This view's copy of `key` when it is at `modRevision` (so the same value and lease): a read
   * hands it back instead of decoding a copy that would be dropped at once.
   */
  held(key: string, modRevision: string): StoredKeyValue | undefined {
    const held = this.#keysOf(key, false)?.get(key);
    return held !== undefined && held.modRevision === modRevision ? held : undefined;
  }

  /** The keys of one service (empty when it has none). */
  service(service: string): ServiceSnapshot {
    const keys = this.#services.get(service);
    if (!keys) return EMPTY;
    const values: StoredKeyValue[] = [];
    let index: StoredKeyValue[] | undefined;
    for (const kv of keys.values()) {
      if (kv.key.startsWith(this.#indexPrefix)) (index ??= []).push(kv);
      else values.push(kv);
    }
    return { values, index: index ?? NONE };
  }

  /**
   * Takes in a transaction of this backend that landed at `revision`. A key the view holds at that
   * revision or a later one is left alone, so a transaction that landed while the view was being
   * read can be applied afterwards, whether the read saw it or not.
   */
  apply(writes: readonly TxnWrite[], revision: string): void {
    const at = BigInt(revision);
    // The writes of one transaction share a lease: its decimal form is made once.
    let lease: bigint | undefined;
    let leaseDec = '';
    for (const w of writes) {
      const keys = this.#keysOf(w.key, w.kind === 'put');
      const held = keys?.get(w.key);
      if (!keys || (held !== undefined && BigInt(held.modRevision) >= at)) continue;
      if (w.kind === 'put') {
        if (w.lease !== lease) leaseDec = (lease = w.lease).toString();
        keys.set(w.key, { key: w.key, value: w.value, lease: leaseDec, modRevision: revision });
      } else this.#delete(w.key);
    }
  }

  /** The value this backend remembered writing at `key` when the view was read, where the key then held something else. */
  rememberedAt(key: string): string | undefined {
    return this.#remembered.get(key);
  }

  /** The service `key` belongs to, if it is an entry or owner-index key of this namespace. */
  #serviceOf(key: string): string | undefined {
    return serviceOf(this.#indexPrefix, key) ?? serviceOf(this.#valuePrefix, key);
  }

  /** The keys of the service `key` belongs to; `create` adds the service when the view has none of its keys yet. */
  #keysOf(key: string, create = true): ServiceKeys | undefined {
    const service = this.#serviceOf(key);
    if (service === undefined) return undefined;
    let keys = this.#services.get(service);
    if (!keys && create) this.#services.set(service, (keys = new Map<string, StoredKeyValue>()));
    return keys;
  }

  #delete(key: string): void {
    const service = this.#serviceOf(key);
    const keys = service === undefined ? undefined : this.#services.get(service);
    if (!keys || service === undefined) return;
    keys.delete(key);
    if (keys.size === 0) this.#services.delete(service);
  }
}
