/**
 * A source over a fixed list: for development, for tests of code that uses the client, and for
 * services whose instances are configured rather than discovered. It never changes and never
 * fails, so everything the client does above the registry (selection, ejection, `call()`)
 * behaves exactly as it does over etcd or Consul.
 */
import type { Instance } from './instance.ts';
import type { DiscoverySource, SourceListener, SourceWatch } from './source.ts';
import { resolveNamespace } from './source.ts';

/** Options of {@link staticSource}. */
export interface StaticSourceOptions {
  /** Instances per service name. */
  readonly services: Readonly<Record<string, readonly Instance[]>>;
  /** Registry namespace, for messages; resolved like every source's. */
  readonly namespace?: string;
}

/** A source that serves `services` as they are. */
export function staticSource(options: StaticSourceOptions): DiscoverySource {
  const namespace = resolveNamespace(options.namespace);
  const services = new Map(Object.entries(options.services).map(([name, list]) => [name, Object.freeze([...list])]));
  return {
    kind: 'static',
    namespace,
    watch(service: string, listener: SourceListener): SourceWatch {
      let open = true;
      queueMicrotask(() => {
        if (open) listener.update(services.get(service) ?? [], '0');
      });
      return {
        close: async () => {
          open = false;
        },
      };
    },
    close: async () => {},
  };
}
