/**
 * The selector of one service: knows its instances, and picks one per call.
 *
 * A pick goes: tag filter → leave out ejected instances → strategy. When the filter matches
 * instances but all of them are ejected, the pick falls back to all of them (panic, as Envoy's
 * load balancer does below its panic threshold): ejection is a guess from recent failures, and
 * calling a doubtful instance beats failing every call without trying. Only when nothing matches
 * at all (or every match has weight 0) does a pick fail, with a `NoInstanceError` saying why.
 *
 * Outcomes flow back through `release` (after `acquire`) or `record` (after `pick`): they feed
 * the in-flight counts, the latency estimates and outlier ejection. Membership comes from
 * `update`, called by whatever watches the registry; state of instances that stay is kept.
 *
 * Everything is synchronous and driven by the injected clock and random source: no timers, no
 * I/O, so the selector needs no shutdown and tests need no waiting.
 */
import { checkStrategy, createBalancer, type Balancer, type BalancerContext, type Strategy } from './balancers/index.ts';
import { monotonicClock, type Clock } from './clock.ts';
import { NoInstanceError } from './errors.ts';
import { instanceId, instanceWeight, type Instance } from './instance.ts';
import { Member } from './member.ts';
import { OutlierDetector, type OutlierOptions } from './outlier.ts';
import { PeakEwma, resolvePeakEwmaOptions, type PeakEwmaOptions } from './peak-ewma.ts';
import { mathRandom, type RandomSource } from './random.ts';
import { isEmptyFilter, tagFilterKey, type TagFilter } from './tags.ts';
import { View } from './view.ts';

/** Options of an `InstanceSelector`. */
export interface InstanceSelectorOptions {
  /** The service name in the registry; used in error messages. */
  readonly service: string;
  /** The registry namespace the client is pinned to; used in error messages. */
  readonly namespace: string;
  /**
   * How to choose among candidates. Default `weighted-round-robin`: it honours the weights the
   * operator publishes and is plain round robin when they are equal. `p2c-peak-ewma` and
   * `least-connections` need `acquire`/`release` to see load.
   */
  readonly strategy?: Strategy;
  /** Outlier ejection options, or `false` to never eject. */
  readonly outlier?: OutlierOptions | false;
  /** Latency estimate options (used by `p2c-peak-ewma`). */
  readonly latency?: PeakEwmaOptions;
  /** Default: `performance.now()`. */
  readonly clock?: Clock;
  /** Default: `Math.random`. */
  readonly random?: RandomSource;
  /**
   * Told when a reported failure ejects an instance, with how long the ejection lasts (ms), for
   * logs and metrics. Returns to service need no event: `inspect()` shows them when read.
   */
  readonly onEjection?: (instance: Instance, ejectedForMs: number) => void;
}

/** The outcome of one call, as the caller saw it. */
export interface CallResult {
  /** False when the call failed in a way that says the instance is unwell (counts towards ejection). */
  readonly ok: boolean;
  /** How long the call took, ms (feeds the latency estimate; leave out if unknown). */
  readonly latencyMs?: number;
}

/** What the selector knows about one instance, for logs, metrics and tests. */
export interface InstanceState {
  readonly id: string;
  readonly instance: Instance;
  readonly weight: number;
  readonly inFlight: number;
  /** Current latency estimate, ms; undefined until the instance has answered once. */
  readonly latencyMs: number | undefined;
  readonly consecutiveFailures: number;
  readonly ejected: boolean;
  /** When the current ejection ends (selector clock), if ejected. */
  readonly ejectedUntil: number | undefined;
  /** Ejections in a row: the next ejection lasts this + 1 times the base. */
  readonly ejectionMultiplier: number;
}

/** Views kept per distinct tag filter before the oldest is forgotten (it still works if held). */
const MAX_VIEWS = 64;

/** Picks instances of one service. */
export class InstanceSelector {
  readonly service: string;
  readonly namespace: string;
  readonly #clock: Clock;
  readonly #context: BalancerContext;
  readonly #outlier: OutlierDetector | undefined;
  readonly #latency: Required<PeakEwmaOptions>;
  readonly #onEjection: ((instance: Instance, ejectedForMs: number) => void) | undefined;
  #strategy: Strategy;
  #strategyVersion = 0;
  #members: Member[] = [];
  #byId = new Map<string, Member>();
  #byInstance = new Map<Instance, Member>();
  /** Members in rotation (weight above 0): what the ejection share is measured against. */
  #inRotation = 0;
  #membershipVersion = 0;
  #healthVersion = 0;
  readonly #unfiltered = new View(undefined);
  readonly #viewsByKey = new Map<string, View>();
  readonly #viewsByFilter = new WeakMap<TagFilter, View>();

  constructor(options: InstanceSelectorOptions) {
    this.service = options.service;
    this.namespace = options.namespace;
    this.#clock = options.clock ?? monotonicClock;
    this.#context = { clock: this.#clock, random: options.random ?? mathRandom };
    this.#outlier = options.outlier === false ? undefined : new OutlierDetector(options.outlier);
    this.#latency = resolvePeakEwmaOptions(options.latency);
    this.#onEjection = options.onEjection;
    this.#strategy = checkStrategy(options.strategy ?? 'weighted-round-robin');
  }

  /** The current strategy. */
  get strategy(): Strategy {
    return this.#strategy;
  }

  /**
   * Switches strategy from the next pick on. Per-instance state (in-flight counts, latency,
   * ejections) carries over; smooth WRR starts a fresh cycle.
   */
  setStrategy(strategy: Strategy): void {
    this.#strategy = checkStrategy(strategy);
    this.#strategyVersion++;
    for (const m of this.#members) m.currentWeight = 0;
  }

  /**
   * Replaces the set of known instances. Instances are matched to known ones by id (see
   * `Instance.id`): those that stay keep their state and take the new address, tags and weight;
   * those that go are forgotten; new ones start fresh. With duplicate ids the last one wins.
   * An invalid instance (negative weight) rejects the whole update, leaving the old set in place.
   */
  update(instances: Iterable<Instance>): void {
    const incoming = new Map<string, { instance: Instance; weight: number }>();
    for (const instance of instances) {
      incoming.set(instanceId(instance), { instance, weight: instanceWeight(instance, this.service) });
    }
    const now = this.#clock.now();
    const byId = new Map<string, Member>();
    for (const [id, { instance, weight }] of incoming) {
      let member = this.#byId.get(id);
      if (member === undefined) {
        member = new Member(instance, id, weight, new PeakEwma(this.#latency.decayMs, this.#latency.defaultLatencyMs, now));
      } else {
        member.instance = instance;
        member.weight = weight;
      }
      byId.set(id, member);
    }
    for (const [id, member] of this.#byId) if (!byId.has(id)) this.#outlier?.forget(member);
    this.#byId = byId;
    this.#members = [...byId.values()];
    this.#byInstance = new Map(this.#members.map((m) => [m.instance, m]));
    this.#inRotation = this.#members.filter((m) => m.weight > 0).length;
    this.#membershipVersion++;
  }

  /** Every known instance in rotation that matches `filter`, ejected or not. */
  instances(filter?: TagFilter): Instance[] {
    return this.#refreshedView(filter).all.map((m) => m.instance);
  }

  /**
   * Chooses an instance without counting a call in flight. Report the outcome with `record` to
   * feed ejection and latency. Throws `NoInstanceError` when nothing matches.
   *
   * Fast path: no filter, or the same filter object again (views are cached by object identity,
   * then by content); treat a filter as immutable once passed.
   */
  pick(filter?: TagFilter): Instance {
    return this.#pickMember(filter).instance;
  }

  /** Like `pick`, and counts a call in flight on the instance until `release`. */
  acquire(filter?: TagFilter): Instance {
    const member = this.#pickMember(filter);
    member.inFlight++;
    return member.instance;
  }

  /**
   * Like `acquire`, but leaves out the instances `avoid` says to (say, those a retry already
   * tried). Returns undefined when every candidate is avoided, so the caller decides what to fall
   * back to; throws `NoInstanceError` as `pick` does when nothing matches at all. Candidates are
   * the instances not ejected, or all matches when every match is ejected (panic), as for `pick`.
   * Slower than `acquire` (it filters per call): for retries, not for every call.
   */
  acquireAvoiding(filter: TagFilter | undefined, avoid: (instance: Instance) => boolean): Instance | undefined {
    const view = this.#candidateView(filter);
    const allowed = this.#candidates(view).filter((m) => !avoid(m.instance));
    if (allowed.length === 0) return undefined;
    const member = this.#balancerOf(view).pick(allowed);
    member.inFlight++;
    return member.instance;
  }

  /** Ends a call started with `acquire` and records its outcome. */
  release(instance: Instance, result: CallResult): void {
    const member = this.#memberOf(instance);
    if (member === undefined) return; // removed meanwhile: its state is gone, nothing to count
    if (member.inFlight > 0) member.inFlight--;
    this.#recordMember(member, result);
  }

  /**
   * Ends a call started with `acquire` without recording an outcome: for a call that says nothing
   * about the instance, such as one its caller cancelled.
   */
  cancel(instance: Instance): void {
    const member = this.#memberOf(instance);
    if (member !== undefined && member.inFlight > 0) member.inFlight--;
  }

  /** Records the outcome of a call to a picked instance (without in-flight accounting). */
  record(instance: Instance, result: CallResult): void {
    const member = this.#memberOf(instance);
    if (member !== undefined) this.#recordMember(member, result);
  }

  /** A snapshot of every known instance's state. */
  inspect(): InstanceState[] {
    const now = this.#clock.now();
    this.#returnExpired(now);
    return this.#members.map((m) => ({
      id: m.id,
      instance: m.instance,
      weight: m.weight,
      inFlight: m.inFlight,
      latencyMs: m.latency.probed ? m.latency.estimateAt(now) : undefined,
      consecutiveFailures: m.outlier.consecutiveFailures,
      ejected: m.outlier.ejected,
      ejectedUntil: m.outlier.ejected ? m.outlier.ejectedUntil : undefined,
      ejectionMultiplier: this.#outlier?.multiplierAt(m.outlier, now) ?? 0,
    }));
  }

  #pickMember(filter: TagFilter | undefined): Member {
    const view = this.#candidateView(filter);
    return this.#balancerOf(view).pick(this.#candidates(view));
  }

  /** The view of `filter`, up to date, with expired ejections ended; throws when nothing matches. */
  #candidateView(filter: TagFilter | undefined): View {
    const outlier = this.#outlier;
    if (outlier !== undefined && outlier.ejectedCount > 0) this.#returnExpired(this.#clock.now());
    const view = this.#refreshedView(filter);
    if (view.all.length === 0) {
      throw new NoInstanceError({
        service: this.service,
        namespace: this.namespace,
        filter,
        known: this.#members.length,
        drained: view.drained,
      });
    }
    return view;
  }

  /** The instances not ejected; all matches when every one is ejected (panic: try them anyway). */
  #candidates(view: View): readonly Member[] {
    return view.healthy.length > 0 ? view.healthy : view.all;
  }

  #balancerOf(view: View): Balancer {
    if (view.strategyVersion !== this.#strategyVersion || view.balancer === undefined) {
      view.balancer = createBalancer(this.#strategy, this.#context);
      view.strategyVersion = this.#strategyVersion;
    }
    return view.balancer;
  }

  #refreshedView(filter: TagFilter | undefined): View {
    const view = this.#viewFor(filter);
    view.refresh(this.#members, this.#membershipVersion, this.#healthVersion);
    return view;
  }

  #viewFor(filter: TagFilter | undefined): View {
    if (filter === undefined) return this.#unfiltered;
    let view = this.#viewsByFilter.get(filter);
    if (view !== undefined) return view;
    if (isEmptyFilter(filter)) {
      view = this.#unfiltered;
    } else {
      const key = tagFilterKey(filter);
      view = this.#viewsByKey.get(key);
      if (view === undefined) {
        view = new View({ ...filter }); // a copy: the caller's object may change later
        if (this.#viewsByKey.size >= MAX_VIEWS) this.#viewsByKey.delete(this.#viewsByKey.keys().next().value!);
        this.#viewsByKey.set(key, view);
      }
    }
    this.#viewsByFilter.set(filter, view);
    return view;
  }

  #memberOf(instance: Instance): Member | undefined {
    // By object first (no string built); an instance object from before an update by its id.
    return this.#byInstance.get(instance) ?? this.#byId.get(instanceId(instance));
  }

  #recordMember(member: Member, result: CallResult): void {
    const now = this.#clock.now();
    if (result.latencyMs !== undefined) member.latency.observe(result.latencyMs, now);
    const outlier = this.#outlier;
    if (outlier === undefined) return;
    // An ejection that has run out ends first, so this outcome counts towards the next one.
    this.#returnExpired(now);
    if (result.ok) outlier.recordSuccess(member);
    else if (outlier.recordFailure(member, now, this.#inRotation)) {
      this.#healthVersion++;
      this.#onEjection?.(member.instance, member.outlier.ejectedUntil - now);
    }
  }

  #returnExpired(now: number): void {
    if (this.#outlier?.returnExpired(now)) this.#healthVersion++;
  }
}
