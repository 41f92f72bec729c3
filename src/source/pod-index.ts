/**
 * Pods of one namespace indexed by label, so that a selector is checked against its candidates
 * only, not against every pod of the namespace: with thousands of pods and ServiceInstances per
 * namespace, matching every selector against every pod on each reconcile was most of the
 * operator's idle CPU.
 */
import type { LabelSelectorLike } from './endpoints.ts';
import type { SlimPod } from './pods.ts';

/**
 * A namespace's pods by `key=value` label. Immutable: build a new one when pods come, go or change
 * their labels. With `current`, which gives the cached version of an indexed pod now, changes that
 * leave the labels alone (readiness, the most frequent pod change) need no new index: candidates
 * are the pods as they are now, and a pod `current` no longer knows is left out. The index keeps
 * the versions it was built from until it is rebuilt: at most one earlier copy of each pod that
 * changed since (a few hundred bytes each).
 */
export class PodLabelIndex {
  readonly #all: readonly SlimPod[];
  readonly #byLabel = new Map<string, SlimPod[]>();
  readonly #current: ((pod: SlimPod) => SlimPod | undefined) | undefined;

  constructor(pods: readonly SlimPod[], current?: (pod: SlimPod) => SlimPod | undefined) {
    this.#all = pods;
    this.#current = current;
    for (const pod of pods)
      for (const [k, v] of Object.entries(pod.metadata.labels)) {
        const label = `${k}=${v}`;
        let list = this.#byLabel.get(label);
        if (!list) this.#byLabel.set(label, (list = []));
        list.push(pod);
      }
  }

  /**
   * Every pod the selector can match, and possibly more: the pods carrying the rarest of its
   * `matchLabels` pairs, or all pods when it has none. The caller still checks the whole selector.
   */
  candidates(selector: LabelSelectorLike): readonly SlimPod[] {
    let candidates = this.#all;
    for (const [k, v] of Object.entries(selector.matchLabels ?? {})) {
      const list = this.#byLabel.get(`${k}=${v}`) ?? [];
      if (list.length < candidates.length) candidates = list;
    }
    const current = this.#current;
    if (current === undefined) return candidates;
    const now: SlimPod[] = [];
    for (const pod of candidates) {
      const live = current(pod);
      if (live !== undefined) now.push(live);
    }
    return now;
  }
}

/** Whether two label maps hold the same pairs. */
export function sameLabels(a: Readonly<Record<string, string>>, b: Readonly<Record<string, string>>): boolean {
  if (a === b) return true;
  let n = 0;
  for (const k in a) {
    if (!Object.hasOwn(a, k)) continue;
    n++;
    if (!Object.hasOwn(b, k) || a[k] !== b[k]) return false;
  }
  for (const k in b) if (Object.hasOwn(b, k)) n--;
  return n === 0;
}
