/** Errors of the etcd backend, thrown by each of its parts and exported by the facade. */

/** A failed etcd operation; `cause` holds the client error. */
export class EtcdRegistryError extends Error {
  override readonly name: string = 'EtcdRegistryError';
}

/** An entry key was written or deleted by someone else after it was read for the plan; nothing of it was written. */
export class EtcdEntryChangedError extends EtcdRegistryError {
  override readonly name = 'EtcdEntryChangedError';
}

/** The message of a caught value, to be quoted in the message of an error that wraps it. */
export function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
