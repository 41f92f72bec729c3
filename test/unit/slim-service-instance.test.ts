import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { ServiceInstance } from '../../src/api/v1alpha1/types.ts';
import { slimServiceInstance } from '../../src/controller/caches.ts';

test('a cached ServiceInstance keeps everything the reconciler reads and drops managedFields and the last-applied copy', () => {
  const si = {
    apiVersion: 'registrar.dev/v1alpha1',
    kind: 'ServiceInstance',
    metadata: {
      name: 'api',
      namespace: 'prod',
      uid: 'u-1',
      resourceVersion: '42',
      generation: 3,
      finalizers: ['registrar.dev/cleanup'],
      labels: { app: 'api' },
      annotations: { 'kubectl.kubernetes.io/last-applied-configuration': '{"huge":true}', team: 'core' },
      managedFields: [{ manager: 'kubectl', operation: 'Apply', fieldsV1: { 'f:spec': {} } }],
    },
    spec: {
      service: 'api',
      endpoints: [{ address: '10.0.0.1', port: 80, metadata: { note: 'x'.repeat(300), tags: ['a', 'b', null] } }],
    },
    status: { observedGeneration: 3, readyRatio: '1/1', conditions: [{ type: 'Ready', status: 'True', message: 'ok' }] },
  } as unknown as ServiceInstance;
  // Shared strings are put in place in the parsed object: compare with a copy taken before.
  const original = structuredClone(si);
  const slim = slimServiceInstance(si) as unknown as { metadata: Record<string, unknown> } & ServiceInstance;
  assert.equal('managedFields' in slim.metadata, false);
  assert.deepEqual(slim.metadata['annotations'], { team: 'core' });
  const { managedFields: _m, annotations: _a, ...keptMeta } = (original as unknown as { metadata: Record<string, unknown> }).metadata;
  const { annotations: _b, ...slimMeta } = slim.metadata;
  assert.deepEqual(slimMeta, keptMeta);
  assert.deepEqual(slim.spec, original.spec);
  assert.deepEqual(slim.status, original.status);
  assert.equal(slim.apiVersion, original.apiVersion);
  assert.equal(slim.kind, original.kind);
});
