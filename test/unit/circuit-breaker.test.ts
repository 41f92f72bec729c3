import assert from 'node:assert/strict';
import { test } from 'node:test';
import { InMemoryRegistry } from '../../src/registry/inmemory/inmemory-registry.ts';
import { CIRCUIT_FAILURE_THRESHOLD, guardBackend } from '../../src/registry/provider.ts';

const scope = { registryNamespace: 'prod', service: 'api' };

test('repeated failures open the circuit: calls then fail at once without reaching the registry, and status can say why', async () => {
  const backend = new InMemoryRegistry();
  const events: boolean[] = [];
  const outcomes: string[] = [];
  const guarded = guardBackend(backend, 'main', 'etcd', {
    circuit: (_r, open) => events.push(open),
    operation: (_b, _op, outcome) => outcomes.push(outcome),
  });
  backend.failNext('records', new Error('connection refused'), CIRCUIT_FAILURE_THRESHOLD + 10);
  for (let i = 0; i < CIRCUIT_FAILURE_THRESHOLD; i++) await assert.rejects(guarded.records(scope), /connection refused/);
  assert.deepEqual(events, [true], 'the circuit opened once');
  assert.match(guarded.failing?.() ?? '', /circuit open.*connection refused/);
  await assert.rejects(guarded.records(scope), /circuit is open.*Last error: connection refused/s);
  assert.equal(outcomes.length, CIRCUIT_FAILURE_THRESHOLD + 1, 'every call is counted');
  backend.clearFailures();
});

test('a healthy registry keeps the circuit closed', async () => {
  const guarded = guardBackend(new InMemoryRegistry(), 'main', 'etcd', undefined);
  for (let i = 0; i < CIRCUIT_FAILURE_THRESHOLD * 2; i++) assert.deepEqual(await guarded.records(scope), []);
  assert.equal(guarded.failing?.(), undefined);
});
