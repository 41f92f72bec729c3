/** The error of the Consul backend, thrown by each of its parts and exported by the facade. */

/** A failed Consul operation; `cause` holds the underlying error(s). */
export class ConsulRegistryError extends Error {
  override readonly name = 'ConsulRegistryError';
}
