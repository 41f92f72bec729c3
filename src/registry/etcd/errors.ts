/** Errors of the etcd backend, thrown by each of its parts and exported by the facade. */

/** A failed etcd operation; `cause` holds the client error. */
export class EtcdRegistryError extends Error {
  override readonly name: string = 'EtcdRegistryError';
}

/** An entry key was written or deleted by someone else after it was read for the plan; nothing of it was written. */
export class EtcdEntryChangedError extends EtcdRegistryError {
  override readonly name = 'EtcdEntryChangedError';
}

export { describe } from '../../errors.ts';
