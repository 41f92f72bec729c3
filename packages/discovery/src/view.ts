/**
 * A view: the candidates of one tag filter, kept ready between picks so that a pick neither
 * filters nor allocates. `all` holds the matching instances in rotation (weight above 0),
 * `healthy` those of them not ejected. Both are rebuilt lazily, only when the selector's
 * membership or health version moved on since the last pick, which happens on updates, ejections
 * and returns to service, not per call. Each view also owns the balancer of its list (a round
 * robin cursor belongs to one list).
 */
import type { Balancer } from './balancers/balancer.ts';
import type { Member } from './member.ts';
import { matchesTags, type TagFilter } from './tags.ts';

/** The candidates of one tag filter. */
export class View {
  readonly filter: TagFilter | undefined;
  /** Matching members in rotation, ejected or not. */
  all: readonly Member[] = [];
  /** `all` without the ejected ones. */
  healthy: readonly Member[] = [];
  /** Matching members of weight 0, for the error message when nothing else matches. */
  drained = 0;
  balancer: Balancer | undefined;
  strategyVersion = -1;
  #membershipVersion = -1;
  #healthVersion = -1;

  constructor(filter: TagFilter | undefined) {
    this.filter = filter;
  }

  /** Brings the lists up to date with the selector's members. */
  refresh(members: readonly Member[], membershipVersion: number, healthVersion: number): void {
    if (this.#membershipVersion !== membershipVersion) {
      const all: Member[] = [];
      let drained = 0;
      for (const m of members) {
        if (this.filter !== undefined && !matchesTags(m.instance.tags, this.filter)) continue;
        if (m.weight > 0) all.push(m);
        else drained++;
      }
      this.all = all;
      this.drained = drained;
      this.#membershipVersion = membershipVersion;
      this.#healthVersion = -1;
    }
    if (this.#healthVersion !== healthVersion) {
      this.healthy = this.all.some((m) => m.outlier.ejected) ? this.all.filter((m) => !m.outlier.ejected) : this.all;
      this.#healthVersion = healthVersion;
    }
  }
}
