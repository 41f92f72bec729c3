/**
 * A member: one known instance plus everything the selector remembers about it (calls in flight,
 * smooth-WRR current weight, latency estimate, ejection record). All per-instance state lives
 * here, in one object per instance id, so that a membership update keeps it for instances that
 * stay (same id), drops it with instances that go, and starts it fresh for new ones, without any
 * balancer having to remap its own tables. Balancers read and write these fields in place, so a
 * pick allocates nothing.
 */
import type { Instance } from './instance.ts';
import { OutlierRecord } from './outlier.ts';
import type { PeakEwma } from './peak-ewma.ts';

/** One known instance and its balancing state. Internal: callers see `Instance`s. */
export class Member {
  /** The latest version of the instance (address, tags, weight may change under the same id). */
  instance: Instance;
  readonly id: string;
  /** Balancing weight; members of weight 0 are never candidates. */
  weight: number;
  /** Calls acquired and not yet released (least connections, P2C). */
  inFlight = 0;
  /** nginx's `current_weight` (smooth weighted round robin). */
  currentWeight = 0;
  readonly latency: PeakEwma;
  readonly outlier = new OutlierRecord();

  constructor(instance: Instance, id: string, weight: number, latency: PeakEwma) {
    this.instance = instance;
    this.id = id;
    this.weight = weight;
    this.latency = latency;
  }
}
