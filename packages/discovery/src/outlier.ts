/**
 * Outlier ejection: passive health checking from the outcomes callers report. An instance that
 * fails `consecutiveFailures` calls in a row is ejected (left out of selection) for a while.
 * Semantics and defaults follow Envoy's outlier detection (arch_overview/upstream/outlier,
 * config.cluster.v3.OutlierDetection) and gRPC's A50 (xDS outlier detection), which took them
 * from Envoy:
 * - consecutive failures before ejection: 5 (Envoy `consecutive_5xx`; A50 leaves this detector
 *   out only because gRPC has no HTTP status, the counting rule itself is Envoy's);
 * - ejection time = base × number of ejections in a row, base 30 s, capped at
 *   max(base, max ejection time), max 300 s (Envoy `base_ejection_time`, `max_ejection_time`;
 *   A50's un-ejection rule `min(base * multiplier, max(base, max))`);
 * - the multiplier goes down by one for every `interval` (10 s) the instance spends back in
 *   service (Envoy: "when the host becomes healthy, the ejection time multiplier decreases with
 *   time"; A50 step 5), so an instance that failed once long ago starts again from the base time.
 *   Computed when next needed rather than on a timer, so the selector owns no timer. It stops
 *   growing once base × multiplier reaches the maximum: Envoy documents the way back down as
 *   taking about max / base intervals, which only holds with such a cap (our reading of its docs,
 *   not of its code);
 * - at most `maxEjectionPercent` (10 %) of the instances are ejected at once, but at least one
 *   (Envoy and A50: "defaults to 10% but will eject at least one host regardless of the value").
 * A success resets the consecutive count; returning to service resets it too. What happens when
 * every candidate is ejected (panic) is the selector's business, not this module's.
 */
import { DiscoveryConfigError } from './errors.ts';
import type { Member } from './member.ts';

/** Options of outlier ejection. */
export interface OutlierOptions {
  /** Failures in a row that eject an instance. Default 5 (Envoy `consecutive_5xx`). */
  readonly consecutiveFailures?: number;
  /** First ejection time, ms; the n-th ejection in a row lasts n times this. Default 30 000. */
  readonly baseEjectionMs?: number;
  /** Longest ejection, ms (never below the base). Default 300 000. */
  readonly maxEjectionMs?: number;
  /** Most instances ejected at once, percent of the service's instances; at least one. Default 10. */
  readonly maxEjectionPercent?: number;
  /** Time back in service that takes one off the ejection multiplier, ms. Default 10 000 (Envoy `interval`). */
  readonly intervalMs?: number;
}

/** Defaults of `OutlierOptions`, with their sources in the module comment. */
export const DEFAULT_OUTLIER: Required<OutlierOptions> = {
  consecutiveFailures: 5,
  baseEjectionMs: 30_000,
  maxEjectionMs: 300_000,
  maxEjectionPercent: 10,
  intervalMs: 10_000,
};

const isPositiveMs = (v: number): boolean => v > 0 && Number.isFinite(v);

/** Each option's check, and what to tell the user when it fails. */
const RULES: readonly (readonly [keyof OutlierOptions, (v: number) => boolean, string])[] = [
  ['consecutiveFailures', (v) => Number.isInteger(v) && v >= 1, 'an integer of at least 1'],
  ['baseEjectionMs', isPositiveMs, 'a positive number of milliseconds'],
  ['maxEjectionMs', isPositiveMs, 'a positive number of milliseconds'],
  ['maxEjectionPercent', (v) => v >= 0 && v <= 100, 'a percentage from 0 to 100'],
  ['intervalMs', isPositiveMs, 'a positive number of milliseconds'],
];

/** Options with defaults filled in, checked. */
export function resolveOutlierOptions(options: OutlierOptions = {}): Required<OutlierOptions> {
  const resolved = { ...DEFAULT_OUTLIER };
  for (const [name, ok, allowed] of RULES) {
    const value = options[name] ?? DEFAULT_OUTLIER[name];
    if (!ok(value)) {
      throw new DiscoveryConfigError(
        `outlier.${name} is ${value}: it must be ${allowed} (or left out for the default, ${DEFAULT_OUTLIER[name]})`,
      );
    }
    resolved[name] = value;
  }
  return resolved;
}

/** The ejection state of one instance (kept on its `Member`). */
export class OutlierRecord {
  consecutiveFailures = 0;
  ejected = false;
  /** When the current ejection ends (valid while `ejected`). */
  ejectedUntil = 0;
  /** Ejections in a row: the multiplier of the base ejection time. */
  multiplier = 0;
  /** When the instance last came back into service, for the multiplier's decrease. */
  backSince = 0;
}

/** Counts failures, ejects and returns instances to service for one service's members. */
export class OutlierDetector {
  readonly #options: Required<OutlierOptions>;
  readonly #ejected = new Set<Member>();
  #nextReturn = Infinity;

  constructor(options: OutlierOptions = {}) {
    this.#options = resolveOutlierOptions(options);
  }

  /** Instances ejected and not yet returned by `returnExpired`. */
  get ejectedCount(): number {
    return this.#ejected.size;
  }

  /** A call to `member` succeeded. */
  recordSuccess(member: Member): void {
    member.outlier.consecutiveFailures = 0;
  }

  /**
   * A call to `member` failed. `population` is the number of instances the share of ejected
   * ones is measured against. Returns true when this failure ejected the member.
   */
  recordFailure(member: Member, now: number, population: number): boolean {
    const record = member.outlier;
    record.consecutiveFailures++;
    if (record.ejected || record.consecutiveFailures < this.#options.consecutiveFailures) return false;
    // Over the cap the failure is still counted, so the next one tries again (as in Envoy).
    if (this.#ejected.size >= this.maxEjected(population)) return false;
    this.#settleMultiplier(record, now);
    const { baseEjectionMs, maxEjectionMs } = this.#options;
    const longest = Math.max(baseEjectionMs, maxEjectionMs);
    record.multiplier = Math.min(record.multiplier + 1, Math.ceil(longest / baseEjectionMs));
    record.ejected = true;
    record.ejectedUntil = now + Math.min(baseEjectionMs * record.multiplier, longest);
    this.#ejected.add(member);
    if (record.ejectedUntil < this.#nextReturn) this.#nextReturn = record.ejectedUntil;
    return true;
  }

  /** How many of `population` instances may be ejected at once: the configured share, at least one. */
  maxEjected(population: number): number {
    return Math.max(1, Math.floor((population * this.#options.maxEjectionPercent) / 100));
  }

  /** Returns to service every member whose ejection has ended by `now`; true if any did. */
  returnExpired(now: number): boolean {
    if (now < this.#nextReturn) return false;
    let changed = false;
    let next = Infinity;
    for (const member of this.#ejected) {
      const record = member.outlier;
      if (record.ejectedUntil <= now) {
        record.ejected = false;
        record.consecutiveFailures = 0;
        record.backSince = record.ejectedUntil;
        this.#ejected.delete(member);
        changed = true;
      } else if (record.ejectedUntil < next) {
        next = record.ejectedUntil;
      }
    }
    this.#nextReturn = next;
    return changed;
  }

  /** The member left the service: it no longer counts against the cap. */
  forget(member: Member): void {
    if (this.#ejected.delete(member) && this.#ejected.size === 0) this.#nextReturn = Infinity;
  }

  /** The ejection multiplier at `now`, after the decrease earned by quiet time. */
  multiplierAt(record: OutlierRecord, now: number): number {
    this.#settleMultiplier(record, now);
    return record.multiplier;
  }

  #settleMultiplier(record: OutlierRecord, now: number): void {
    if (record.ejected || record.multiplier === 0) return;
    const steps = Math.floor((now - record.backSince) / this.#options.intervalMs);
    if (steps <= 0) return;
    const taken = Math.min(steps, record.multiplier);
    record.multiplier -= taken;
    record.backSince += taken * this.#options.intervalMs;
  }
}
