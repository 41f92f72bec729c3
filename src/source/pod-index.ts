/**
 * Pods of one namespace indexed by label, so that a selector is checked against its candidates
 * only, not against every pod of the namespace: with thousands of pods and ServiceInstances per
 * namespace, matching every selector against every pod on each reconcile was most of the
 * operator's idle CPU.
 */
import type { LabelSelectorLike } from './endpoints.ts';
import type { SlimPod } from './pods.ts';

/** A namespace's pods by `key=value` label. Immutable: build a new one when the pods change. */
export class PodLabelIndex {
  readonly #all: readonly SlimPod[];
  readonly #byLabel = new Map<string, SlimPod[]>();

  constructor(pods: readonly SlimPod[]) {
    this.#all = pods;
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
    return candidates;
  }
}
