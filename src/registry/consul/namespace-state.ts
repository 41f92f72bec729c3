/**
 * What the Consul backend knows of each registry namespace: where its heartbeat lives and whether
 * that heartbeat is known to be registered as configured.
 */
import { HEARTBEAT_SERVICE, heartbeatCheckId } from './codec.ts';
import type { ConsulNaming } from './naming.ts';

/** The state of one registry namespace. */
export interface NamespaceState {
  readonly registryNamespace: string;
  /** Consul Enterprise namespace; '' is the default (and only, on open-source Consul). */
  readonly consulNamespace: string;
  readonly heartbeatServiceId: string;
  readonly heartbeatCheckId: string;
  readonly heartbeatName: string;
  /** The heartbeat service is registered on the agent, as far as we know. */
  present: boolean;
  /** ... and with the configured TTL and reap delay. */
  current: boolean;
  /** Single flight of registering the heartbeat. */
  ensuring: Promise<void> | undefined;
  /** Single flight of adopting a heartbeat found on the agent (concurrent first reads share one pass). */
  adopting: Promise<void> | undefined;
  /** Bumped on every registration, so a read that started before one cannot undo it. */
  registrations: number;
  /** When a read or write last asked for this namespace, in ms since the epoch. */
  usedAt: number;
}

/** The state of every registry namespace the backend has used, by name; `get` does not count as a use. */
export class ConsulNamespaces extends Map<string, NamespaceState> {
  readonly #naming: ConsulNaming;

  /** Each namespace's heartbeat ids, name and Consul namespace come from `naming`. */
  constructor(naming: ConsulNaming) {
    super();
    this.#naming = naming;
  }

  /** The namespace's state, created if need be, marked as used now. Throws when the templates cannot name it. */
  use(registryNamespace: string): NamespaceState {
    let state = this.get(registryNamespace);
    if (state === undefined) {
      const consulNamespace = this.#naming.consulNamespace(registryNamespace);
      const heartbeatId = this.#naming.heartbeatServiceId(registryNamespace);
      state = {
        registryNamespace,
        consulNamespace,
        heartbeatServiceId: heartbeatId,
        heartbeatCheckId: heartbeatCheckId(heartbeatId),
        heartbeatName: this.#naming.serviceName(registryNamespace, HEARTBEAT_SERVICE),
        present: false,
        current: false,
        ensuring: undefined,
        adopting: undefined,
        registrations: 0,
        usedAt: 0,
      };
      this.set(registryNamespace, state);
    }
    state.usedAt = Date.now();
    return state;
  }
}
