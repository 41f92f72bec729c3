/** Helpers of the `call()` tests: a client over a MemorySource, and waiting for a condition. */
import { setTimeout as sleep } from 'node:timers/promises';
import { DiscoveryClient, type DiscoveryClientOptions } from '../src/client.ts';
import type { Instance } from '../src/instance.ts';
import { FakeClock, inst, scriptedRandom } from './fakes.ts';
import { MemorySource } from './memory-source.ts';

export const SERVICE = 'user-service';

/** A client following `SERVICE` with `instances` (a, b, c by default), round robin from a, no waits between attempts. */
export function makeClient(options: Partial<DiscoveryClientOptions> = {}, instances: Instance[] = [inst('a'), inst('b'), inst('c')]) {
  const source = new MemorySource();
  source.set(SERVICE, instances);
  const clock = new FakeClock();
  const client = new DiscoveryClient({
    source,
    clock,
    random: scriptedRandom(0),
    strategy: 'round-robin',
    ...options,
    call: { backoff: { initialMs: 0, maxMs: 0 }, ...options.call },
  });
  return {
    client,
    source,
    clock,
    state: (id: string) =>
      client
        .selector(SERVICE)
        .inspect()
        .find((s) => s.id === id)!,
  };
}

/** Resolves once `condition` holds; fails the test after a generous deadline (the machine may be loaded). */
export async function eventually(condition: () => boolean, what: string, deadlineMs = 20_000): Promise<void> {
  const until = Date.now() + deadlineMs;
  while (!condition()) {
    if (Date.now() > until) throw new Error(`still waiting after ${deadlineMs} ms for: ${what}`);
    await sleep(5);
  }
}

/** A promise that rejects with the signal's reason when it aborts, and never settles otherwise. */
export function untilAborted(signal: AbortSignal): Promise<never> {
  return new Promise((_, reject) => {
    if (signal.aborted) reject(signal.reason as Error);
    signal.addEventListener('abort', () => reject(signal.reason as Error), { once: true });
  });
}
