/**
 * How the ServiceInstance reconciler reports registry failures to the work queue: failures that
 * only a change of configuration can fix are terminal (no retry storm), the rest are retried.
 * Above the backend boundary: an in-memory registry and in-memory caches, no servers.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import pino from 'pino';

import { FINALIZER, type ServiceInstanceStatus } from '../../src/api/v1alpha1/types.ts';
import { TerminalError } from '../../src/controller/queue.ts';
import { ServiceInstanceReconciler } from '../../src/controller/service-instance-reconciler.ts';
import type { EventTarget } from '../../src/kube/events.ts';
import { InMemoryRegistry } from '../../src/registry/inmemory/inmemory-registry.ts';
import { RegistryConfigError, type Backend } from '../../src/registry/provider.ts';
import { registryResource, staticServiceInstance } from '../support/resources.ts';

const registry = registryResource('main');
const si = staticServiceInstance('prod', 'api', 'api', { uid: 'si-uid', generation: 1, finalizers: [FINALIZER] });

function reconcilerWith(get: () => Promise<Backend>): {
  reconciler: ServiceInstanceReconciler;
  statuses: ServiceInstanceStatus[];
  warnings: string[];
} {
  const statuses: ServiceInstanceStatus[] = [];
  const warnings: string[] = [];
  const reconciler = new ServiceInstanceReconciler({
    clusterId: 'cluster-a',
    caches: { serviceInstance: () => si, pods: () => [], registries: () => [registry], namespaceLabels: () => ({}) },
    backends: { get },
    writer: {
      addFinalizer: () => Promise.resolve(),
      removeFinalizer: () => Promise.resolve(),
      patchStatus: (_si, status) => {
        statuses.push(status);
        return Promise.resolve();
      },
    },
    events: {
      normal: () => undefined,
      warning: (_t: EventTarget, reason: string, message: string) => warnings.push(`${reason}: ${message}`),
    },
    logger: pino({ level: 'silent' }),
    now: () => new Date('2026-11-30T00:00:00Z'),
    resyncMs: 60_000,
  });
  return { reconciler, statuses, warnings };
}

void describe('ServiceInstanceReconciler errors', () => {
  void it('a Registry that cannot be used as configured fails the reconcile terminally, with status and event saying why', async () => {
    const { reconciler, statuses, warnings } = reconcilerWith(() =>
      Promise.reject(new RegistryConfigError('Registry main has type etcd but no spec.etcd')),
    );
    await assert.rejects(
      reconciler.reconcile('prod/api'),
      (err: unknown) => err instanceof TerminalError && /no spec.etcd/.test(err.message),
    );
    assert.equal(statuses.at(-1)?.conditions?.find((c) => c.type === 'Registered')?.status, 'False');
    assert.ok(warnings.some((w) => w.startsWith('RegistrationFailed: Registry main: Registry main has type etcd but no spec.etcd')));
  });

  void it('a Secret that cannot be read yet is retried with backoff: it is often created just after its Registry', async () => {
    const { reconciler } = reconcilerWith(() =>
      Promise.reject(new RegistryConfigError('cannot read Secret kube-registrar/etcd named by Registry main')),
    );
    await assert.rejects(
      reconciler.reconcile('prod/api'),
      (err: unknown) => err instanceof AggregateError && !(err instanceof TerminalError),
    );
  });

  void it('an unreachable registry fails the reconcile so that the queue retries it with backoff', async () => {
    const { reconciler } = reconcilerWith(() => Promise.reject(new Error('connect ECONNREFUSED 127.0.0.1:1')));
    await assert.rejects(
      reconciler.reconcile('prod/api'),
      (err: unknown) => err instanceof AggregateError && !(err instanceof TerminalError),
    );
  });

  void it('a usable registry gets the entry and the reconcile asks for its next resync', async () => {
    const backend = new InMemoryRegistry([]);
    const { reconciler, statuses } = reconcilerWith(() => Promise.resolve(backend));
    const result = await reconciler.reconcile('prod/api');
    assert.ok(result?.requeueAfterMs !== undefined);
    assert.equal((await backend.records({ registryNamespace: 'prod', service: 'api' })).length, 1);
    assert.equal(statuses.at(-1)?.conditions?.find((c) => c.type === 'Registered')?.status, 'True');
  });
});
