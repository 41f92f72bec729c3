/**
 * Rotated registry credentials without a restart. The operator may only `get` the Secrets a
 * Registry names (no list or watch), so it re-reads them on a timer, compares a digest of their
 * data with the digest each backend was built from, and lets the provider rebuild a backend whose
 * Secrets changed. The decisions live here, apart from etcd and Consul, so tests can drive them
 * with a fake clock.
 */
import { createHash } from 'node:crypto';
import type { RegistrySpec, SecretReference } from '../api/v1alpha1/types.ts';
import { systemClock, type Clock } from '../clock.ts';
import { describe } from '../errors.ts';

/** Default pause between two re-reads of the Secrets live backends depend on. */
export const DEFAULT_SECRET_REFRESH_MS = 30_000;

/**
 * Shortest pause between two rounds brought forward by refused registry calls: quick enough that
 * a lease or heartbeat refused with revoked credentials is renewed with the new ones well within
 * its TTL, slow enough that a registry outage costs the apiserver at most one `get` per Secret a
 * second.
 */
export const REFRESH_SOON_GAP_MS = 1000;

/** `namespace/name` of a Secret: the key of every digest map here. */
export type SecretKey = string;

/** Digest of each Secret's data, by {@link SecretKey}. */
export type SecretDigests = Readonly<Record<SecretKey, string>>;

/** The key of a Secret reference. */
export function secretKey(ref: { readonly namespace?: string; readonly name: string }): SecretKey {
  return `${ref.namespace ?? ''}/${ref.name}`;
}

/** The reference a {@link SecretKey} stands for (names and namespaces never contain `/`). */
export function secretRefOf(key: SecretKey): SecretReference {
  const i = key.indexOf('/');
  return { namespace: key.slice(0, i), name: key.slice(i + 1) };
}

/**
 * A SHA-256 over a Secret's data, keys sorted and every key and value length-prefixed, so that no
 * two different data maps share a digest. Only compared, never logged: a digest of a short
 * password could be guessed back.
 */
export function secretDigest(data: Readonly<Record<string, Buffer>>): string {
  const hash = createHash('sha256');
  const length = Buffer.alloc(4);
  for (const key of Object.keys(data).sort()) {
    const k = Buffer.from(key, 'utf8');
    const v = data[key] as Buffer;
    length.writeUInt32BE(k.length);
    hash.update(length).update(k);
    length.writeUInt32BE(v.length);
    hash.update(length).update(v);
  }
  return hash.digest('hex');
}

/**
 * What identifies a backend: the Registry's uid and spec and the digests of the Secrets it was
 * built from, so that changed credentials mean a different backend just as a changed spec does.
 */
export function backendFingerprint(uid: string, spec: RegistrySpec, digests: SecretDigests): string {
  return JSON.stringify([uid, spec, Object.entries(digests).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))]);
}

/** The digests a backend was built from, with the newer ones known for any of its Secrets put in. */
export function currentDigests(built: SecretDigests, latest: (key: SecretKey) => string | undefined): SecretDigests {
  const out: Record<SecretKey, string> = {};
  for (const [key, digest] of Object.entries(built)) out[key] = latest(key) ?? digest;
  return out;
}

/** What the provider knows about the backend it holds for a Registry. */
export interface HeldBackend {
  /** {@link backendFingerprint} without the digests: the uid and spec it was built for. */
  readonly specKey: string;
  /** Digests of the Secrets it was built from; undefined while its build is still reading them. */
  readonly digests: SecretDigests | undefined;
  /** A replacement with rotated credentials is being built. */
  readonly replacing: boolean;
  /** The last replacement that failed: for which credentials, and when. */
  readonly failed: { readonly fingerprint: string; readonly atMs: number } | undefined;
}

/**
 * What to do for a Registry: `build` (nothing held), `reuse` the held backend, `rebuild` (its uid
 * or spec changed: the old backend goes first, as for any spec change), `rotate` (only its
 * Secrets changed: build a replacement, and close the old backend only once the replacement is
 * built), `await-replacement` (share the replacement already being built), or `keep-old` (the
 * replacement with these same credentials failed less than `retryMs` ago: the old backend keeps
 * serving until the next try).
 */
export type BackendDecision = 'build' | 'reuse' | 'rebuild' | 'rotate' | 'await-replacement' | 'keep-old';

/** Decides what the provider does with the backend it holds (see {@link BackendDecision}). */
export function decideBackend(
  held: HeldBackend | undefined,
  wanted: { readonly uid: string; readonly spec: RegistrySpec },
  latest: (key: SecretKey) => string | undefined,
  nowMs: number,
  retryMs: number,
): BackendDecision {
  if (held === undefined) return 'build';
  if (held.specKey !== specKeyOf(wanted.uid, wanted.spec)) return 'rebuild';
  // A build still reading its Secrets will use what they hold now.
  if (held.digests === undefined) return 'reuse';
  if (held.replacing) return 'await-replacement';
  const now = backendFingerprint(wanted.uid, wanted.spec, currentDigests(held.digests, latest));
  if (now === backendFingerprint(wanted.uid, wanted.spec, held.digests)) return 'reuse';
  if (held.failed !== undefined && held.failed.fingerprint === now && nowMs - held.failed.atMs < retryMs) return 'keep-old';
  return 'rotate';
}

/** The uid and spec part of a backend's identity. */
export function specKeyOf(uid: string, spec: RegistrySpec): string {
  return JSON.stringify([uid, spec]);
}

/** Options of {@link SecretRefresher}. */
export interface SecretRefresherOptions {
  /** Pause between the end of one round of re-reads and the start of the next. */
  readonly intervalMs: number;
  /**
   * Shortest pause between two rounds when {@link SecretRefresher.refreshSoon} brings one forward;
   * defaults to {@link REFRESH_SOON_GAP_MS} (never more than `intervalMs`).
   */
  readonly minGapMs?: number;
  /** Reads a Secret's data with a `get` (the only verb the operator has on Secrets). */
  readonly read: (ref: SecretReference) => Promise<Readonly<Record<string, Buffer>>>;
  /** The Secrets that live backends were built from, read again every round. */
  readonly watched: () => Iterable<SecretKey>;
  /** After every round, with the Secrets whose data changed since last seen (maybe none). */
  readonly afterRound: (changed: readonly SecretKey[]) => void;
  /** A Secret could not be read (first failure, or a different error than last time). */
  readonly onReadError?: (key: SecretKey, err: unknown) => void;
  /** A Secret that could not be read is readable again. */
  readonly onReadRecovered?: (key: SecretKey) => void;
  /** Defaults to the real clock. */
  readonly clock?: Clock;
}

/**
 * Re-reads, every `intervalMs`, the Secrets live backends depend on and remembers the latest digest
 * of each. Rounds never overlap (the next is scheduled when one ends). A Secret that cannot be
 * read keeps its last digest, so a Secret deleted or made unreadable never tears down a backend
 * that still works; the error is reported once, not every round. {@link refreshSoon} brings the
 * next round forward when a registry refuses calls. `close()` stops the timer and waits for a
 * round under way.
 */
export class SecretRefresher {
  readonly #o: SecretRefresherOptions;
  readonly #clock: Clock;
  readonly #latest = new Map<SecretKey, string>();
  /** Last read error per Secret, to report each failure once. */
  readonly #errors = new Map<SecretKey, string>();
  #timer: unknown;
  /** When the scheduled round starts. */
  #nextAtMs = Infinity;
  /** When the last round ended. */
  #lastEndMs = -Infinity;
  #round: Promise<void> | undefined;
  #closed = false;

  constructor(options: SecretRefresherOptions) {
    this.#o = options;
    this.#clock = options.clock ?? systemClock;
  }

  /** Starts the rounds (the first after one interval). */
  start(): void {
    if (this.#closed || this.#timer !== undefined || this.#round !== undefined) return;
    this.#schedule(this.#o.intervalMs);
  }

  /**
   * Brings the next round forward, to at least `minGapMs` after the last one: a registry refused a
   * call, perhaps because its credentials were just revoked and the Secret already holds new ones.
   * Does nothing while a round is under way or before {@link start}.
   */
  refreshSoon(): void {
    if (this.#closed || this.#timer === undefined) return;
    const gap = Math.min(this.#o.minGapMs ?? REFRESH_SOON_GAP_MS, this.#o.intervalMs);
    const now = this.#clock.now();
    const at = Math.max(now, this.#lastEndMs + gap);
    if (at >= this.#nextAtMs) return;
    this.#clock.clearTimeout(this.#timer);
    this.#schedule(at - now);
  }

  #schedule(ms: number): void {
    this.#nextAtMs = this.#clock.now() + ms;
    this.#timer = this.#clock.setTimeout(() => {
      this.#timer = undefined;
      this.#nextAtMs = Infinity;
      this.#round = this.refreshNow().finally(() => {
        this.#round = undefined;
        this.#lastEndMs = this.#clock.now();
        this.start();
      });
    }, ms);
  }

  /** The latest digest seen of a Secret, from a round or from a build ({@link record}). */
  latest(key: SecretKey): string | undefined {
    return this.#latest.get(key);
  }

  /** Records what a backend build just read, so a round compares against the newest data. */
  record(key: SecretKey, digest: string): void {
    this.#latest.set(key, digest);
  }

  /** One round: re-reads every watched Secret, then calls `afterRound`. Never rejects. */
  async refreshNow(): Promise<void> {
    const keys = [...new Set(this.#o.watched())];
    const changed: SecretKey[] = [];
    await Promise.all(
      keys.map(async (key) => {
        let digest: string;
        try {
          digest = secretDigest(await this.#o.read(secretRefOf(key)));
        } catch (err: unknown) {
          const message = describe(err);
          if (this.#errors.get(key) !== message) this.#o.onReadError?.(key, err);
          this.#errors.set(key, message);
          return;
        }
        if (this.#errors.delete(key)) this.#o.onReadRecovered?.(key);
        const before = this.#latest.get(key);
        this.#latest.set(key, digest);
        if (before !== undefined && before !== digest) changed.push(key);
      }),
    );
    if (this.#closed) return;
    try {
      this.#o.afterRound(changed.sort());
    } catch {
      // The caller's reaction to one round must not stop the next.
    }
  }

  /** Stops the rounds and waits for one under way. */
  async close(): Promise<void> {
    this.#closed = true;
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    this.#timer = undefined;
    await this.#round;
  }
}
