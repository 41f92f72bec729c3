import assert from 'node:assert/strict';
import { test } from 'node:test';
import { InMemoryRegistry } from '../../src/registry/inmemory/inmemory-registry.ts';
import { ConsulHttpError } from '../../src/registry/consul/client.ts';
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

test("a registry refusing one ServiceInstance's input (Consul's 400) keeps the circuit closed for everyone else", async () => {
  const backend = new InMemoryRegistry();
  const guarded = guardBackend(backend, 'main', 'consul', undefined);
  const refused = new ConsulHttpError('PUT', '/v1/agent/service/register', 400, 'Invalid service address');
  backend.failNext(
    'applyChanges',
    new Error('1 of 1 Consul calls failed', { cause: new AggregateError([refused]) }),
    CIRCUIT_FAILURE_THRESHOLD * 2,
  );
  const none = { create: [], updateOld: [], updateNew: [], delete: [] };
  for (let i = 0; i < CIRCUIT_FAILURE_THRESHOLD * 2; i++) await assert.rejects(guarded.applyChanges(none), /Consul calls failed/);
  assert.equal(guarded.failing?.(), undefined, 'the circuit stayed closed');
  assert.deepEqual(await guarded.records(scope), [], 'and the next call reaches the registry');

  // Whereas a registry that does not answer opens it.
  const unreachable = new ConsulHttpError('PUT', '/v1/agent/service/register', 0, 'connect ECONNREFUSED');
  backend.failNext(
    'applyChanges',
    new Error('1 of 1 Consul calls failed', { cause: new AggregateError([unreachable]) }),
    CIRCUIT_FAILURE_THRESHOLD,
  );
  for (let i = 0; i < CIRCUIT_FAILURE_THRESHOLD; i++) await assert.rejects(guarded.applyChanges(none), /Consul calls failed/);
  assert.match(guarded.failing?.() ?? '', /circuit open/);
});
