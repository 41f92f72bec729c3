/**
 * The index bookkeeping of a Consul blocking query, as Consul's documentation ("Blocking Queries",
 * "Implementation details") asks every client to do it. Pure, so each rule has its unit test.
 */

/** Longest `wait` Consul accepts (10 minutes). */
export const MAX_WAIT_SECONDS = 600;

/**
 * The index to send with the next query, given the one sent (`previous`, 0 for a plain read) and
 * the `X-Consul-Index` answered:
 * - an index lower than the one sent means the state behind it was replaced (an agent or cluster
 *   restarted with fresh state, a snapshot was restored, another server answered): reset to 0, so
 *   the next query is a plain read instead of blocking on an index that may never come again;
 * - an index below 1 (or none) is a Consul bug the docs warn of; blocking on 0 would return at once
 *   every time, so it is clamped to 1.
 */
export function nextIndex(previous: number, answered: string | null): number {
  const index = answered === null ? NaN : Number(answered);
  if (!Number.isSafeInteger(index) || index < 1) return 1;
  if (index < previous) return 0;
  return index;
}

/**
 * Deadline of a blocking query: Consul answers after `wait` plus up to wait/16 of jitter it adds,
 * so the deadline is a little above that; reaching it means the agent is gone, not that nothing
 * changed.
 */
export function blockingDeadlineMs(waitSeconds: number): number {
  return Math.ceil((waitSeconds * 1000 * 17) / 16) + 5000;
}

/**
 * How long to wait before sending the next query: queries start at least `minIntervalMs` apart, so
 * a service that changes all the time (or an agent that answers at once with the same index) costs
 * a bounded number of reads per second instead of a tight loop.
 */
export function delayBeforeNextQuery(lastStartMs: number | undefined, nowMs: number, minIntervalMs: number): number {
  if (lastStartMs === undefined) return 0;
  return Math.max(0, lastStartMs + minIntervalMs - nowMs);
}
