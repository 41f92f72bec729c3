/**
 * Waiting between attempts in the background loops (etcd watches, etcd registrations, Consul
 * blocking queries): a timer that their `close()` cuts short through an AbortSignal.
 */
import { setTimeout as sleep } from 'node:timers/promises';

/** Waits `ms` unless `signal` aborts first; resolves true if the whole time passed. Never rejects. */
export async function pause(ms: number, signal: AbortSignal): Promise<boolean> {
  if (signal.aborted) return false;
  if (ms <= 0) return true;
  try {
    await sleep(ms, undefined, { signal });
    return true;
  } catch {
    return false;
  }
}
