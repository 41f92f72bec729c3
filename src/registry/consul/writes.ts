/**
 * Writes of the Consul backend: changes applied as agent calls with bounded concurrency, each
 * retried on transient failures, in a fixed order: heartbeat, then registrations, then
 * deregistrations (make before break). A failed call does not stop the others; what landed stays,
 * and the error names what did not. Every call the agent acknowledges is written through to the
 * backend's view of the agent; a failed one makes the next read wait for a bulk read. An endpoint failing its health check takes two calls: its
 * registration (already critical) and the update that gives its health check the probe's output.
 */
import type { Changes, RegistryEntry } from '../types.ts';
import type { ServiceRegistration } from './client.ts';
import { healthCheckUpdate } from './codec.ts';
import type { ConsulBackendContext } from './context.ts';
import { ConsulRegistryError } from './errors.ts';
import type { ConsulHeartbeats } from './heartbeats.ts';
import { place } from './naming.ts';

interface Failure {
  readonly what: string;
  readonly err: unknown;
}

/** Runs `work` over `items` with at most `limit` at a time; `work` handles its own errors. */
async function forEachBounded<T>(items: readonly T[], limit: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const item = items[next++] as T;
      await work(item);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

/**
 * Applies the changes as agent calls, at most `maxConcurrentCalls` at a time: first the heartbeat
 * of every namespace written to (through `heartbeats`), then registrations (create and update),
 * then deregistrations. Deregistrations wait for the registrations on purpose: when one reconcile
 * sees a new pod Ready and an old one leaving (a rolling update with maxUnavailable 0), the service
 * never holds fewer passing instances than before (the rollout test checks it, in etcd and Consul).
 * If any call failed, a {@link ConsulRegistryError} names them all.
 *
 * @throws {RangeError} for entries of another cluster: this backend never touches those.
 */
export async function applyConsulChanges(ctx: ConsulBackendContext, heartbeats: ConsulHeartbeats, changes: Changes): Promise<void> {
  const { calls, views, naming, namespaces, clusterId, dryRun, maxConcurrentCalls, logger } = ctx;
  if (changes.updateOld.length !== changes.updateNew.length) {
    throw new RangeError(`invalid changes: ${changes.updateOld.length} updateOld but ${changes.updateNew.length} updateNew entries`);
  }
  const puts = [...changes.create, ...changes.updateNew];
  const deletes = [...changes.delete];
  changes.updateOld.forEach((old, i) => {
    const next = changes.updateNew[i] as RegistryEntry;
    if (naming.serviceId(old) !== naming.serviceId(next)) deletes.push(old);
  });
  for (const entry of [...puts, ...deletes]) {
    if (entry.owner.clusterId !== clusterId) {
      throw new RangeError(
        `refusing to write ${entry.registryNamespace}/${entry.endpoint.service}/${entry.endpoint.instanceId}: ` +
          `it belongs to cluster ${JSON.stringify(entry.owner.clusterId)}, this backend to ${JSON.stringify(clusterId)}`,
      );
    }
  }
  if (puts.length + deletes.length === 0) return;
  await calls.checkAgent();

  const failures: Failure[] = [];
  const blocked = new Set<string>();
  const heartbeatNamespaces = [...new Set(puts.map((e) => e.registryNamespace))];
  await Promise.all(
    heartbeatNamespaces.map(async (ns) => {
      try {
        await heartbeats.ensure(namespaces.use(ns));
      } catch (err: unknown) {
        blocked.add(ns);
        const state = namespaces.get(ns);
        const which = state === undefined ? '' : ` ${state.heartbeatName} (ID ${state.heartbeatServiceId})`;
        failures.push({ what: `registering the heartbeat${which} of registry namespace ${ns}`, err });
      }
    }),
  );
  const skipped = puts.filter((e) => blocked.has(e.registryNamespace)).length;
  if (skipped > 0) logger.warn({ skipped }, 'not registering instances whose heartbeat could not be registered');

  await forEachBounded(
    puts.filter((e) => !blocked.has(e.registryNamespace)),
    maxConcurrentCalls,
    async (entry) => {
      let body: ServiceRegistration | undefined;
      let step = 'registering';
      try {
        const state = namespaces.use(entry.registryNamespace);
        body = naming.registration(state.heartbeatServiceId, entry);
        const update = healthCheckUpdate(body.ID, entry.endpoint.health);
        if (dryRun) {
          logger.info(
            {
              dryRun: true,
              op: 'register',
              consulNamespace: state.consulNamespace,
              service: body,
              ...(update ? { healthCheck: update } : {}),
            },
            'dry run: Consul registration skipped',
          );
          return;
        }
        const registration = body;
        const view = views.of(state.consulNamespace);
        await calls.call(() => calls.client.register(registration, state.consulNamespace));
        view.registered(registration);
        if (update !== undefined) {
          // Registering cannot set a check's output, and keeps the status and output of a check it
          // registers again: this call sets both, so the output shows and a hand-passed check turns critical.
          step = `setting the probe output on health check ${update.checkId} after registering`;
          await calls.call(() => calls.client.updateTtl(update.checkId, update.status, update.output, state.consulNamespace));
          view.registered(registration, update);
        }
      } catch (err: unknown) {
        // Whether the call landed is unknown: the next read waits for the agent's own account.
        if (body !== undefined) views.invalidateAll();
        failures.push({ what: `${step} ${place(entry)} as Consul service ${body?.Name ?? '?'} (ID ${naming.serviceId(entry)})`, err });
      }
    },
  );
  await forEachBounded(deletes, maxConcurrentCalls, async (entry) => {
    const id = naming.serviceId(entry);
    try {
      const state = namespaces.use(entry.registryNamespace);
      if (dryRun) {
        logger.info(
          { dryRun: true, op: 'deregister', consulNamespace: state.consulNamespace, serviceId: id },
          'dry run: Consul deregistration skipped',
        );
        return;
      }
      const existed = await calls.call(() => calls.client.deregister(id, state.consulNamespace));
      views.of(state.consulNamespace).deregistered(id);
      if (!existed) logger.debug({ serviceId: id }, 'Consul service to deregister was already gone');
    } catch (err: unknown) {
      views.invalidateAll();
      failures.push({ what: `deregistering ${place(entry)} (Consul service ID ${id})`, err });
    }
  });

  const total = heartbeatNamespaces.length + puts.length + deletes.length;
  if (failures.length > 0) {
    const shown = failures.slice(0, 3).map((f) => `${f.what} failed: ${calls.explain(f.err)}`);
    const more = failures.length > 3 ? `; and ${failures.length - 3} more` : '';
    const notTried = skipped > 0 ? ` ${skipped} registrations were not tried because their heartbeat is missing.` : '';
    throw new ConsulRegistryError(
      `${failures.length} of ${total} Consul calls failed; the others were applied and are kept, and a retry applies the rest.${notTried} ${shown.join('; ')}${more}`,
      { cause: new AggregateError(failures.map((f) => f.err)) },
    );
  }
  logger.debug({ registered: puts.length, deregistered: deletes.length, heartbeats: heartbeatNamespaces.length }, 'Consul changes applied');
}
