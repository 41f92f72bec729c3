import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { gateEndpoints, healthGate, truncateOutput } from '../../src/health/gate.ts';
import type { EndpointVerdict } from '../../src/health/monitor.ts';
import type { HealthStatus } from '../../src/health/state.ts';
import { HEALTH_OUTPUT_MAX, type Endpoint, type RegistryEntry } from '../../src/registry/types.ts';

const endpoint = (n: number): Endpoint => ({
  service: 'orders',
  instanceId: `10.0.0.${n}:80`,
  address: `10.0.0.${n}`,
  port: 80,
  weight: 1,
  tags: {},
  metadata: {},
  source: `static/shop/orders/${n}`,
});

const entry = (e: Endpoint): RegistryEntry => ({
  registryNamespace: 'shop',
  k8sNamespace: 'shop',
  owner: { clusterId: 'c1', namespace: 'shop', name: 'orders' },
  endpoint: e,
});

const verdicts = (statuses: Record<number, HealthStatus>): Map<string, EndpointVerdict> =>
  new Map(
    Object.entries(statuses).map(([n, status]) => [
      `10.0.0.${n}:80`,
      { status, lastMessage: status === 'unhealthy' ? 'status 503' : 'ok', since: 0 },
    ]),
  );

const ids = (endpoints: readonly Endpoint[]): string[] => endpoints.map((e) => `${e.instanceId}${e.health ? ` ${e.health.status}` : ''}`);

describe('gateEndpoints', () => {
  const all = [1, 2, 3, 4].map(endpoint);

  it('passes every endpoint through when no check applies', () => {
    assert.deepEqual(ids(gateEndpoints(all, undefined, [], false)), ids(all));
  });

  it('writes healthy endpoints, drops unhealthy ones where they cannot be marked, and leaves unknown ones as the registry holds them', () => {
    const gate = healthGate(all, verdicts({ 1: 'healthy', 2: 'unhealthy', 3: 'unknown', 4: 'healthy' }), 50);
    // 3 is registered already (a restart): it stays; 2 was registered: it goes.
    const current = [entry(endpoint(2)), entry(endpoint(3))];
    assert.deepEqual(ids(gateEndpoints(all, gate, current, false)), ['10.0.0.1:80', '10.0.0.3:80', '10.0.0.4:80']);
    // Unknown and not registered (a new endpoint): not written before its first success.
    assert.deepEqual(ids(gateEndpoints(all, gate, [], false)), ['10.0.0.1:80', '10.0.0.4:80']);
  });

  it('marks a registered unhealthy endpoint critical where the registry can show it, with the probe message', () => {
    const gate = healthGate(all, verdicts({ 1: 'healthy', 2: 'unhealthy', 3: 'unhealthy', 4: 'healthy' }), 0);
    const gated = gateEndpoints(all, gate, [entry(endpoint(2))], true);
    assert.deepEqual(ids(gated), ['10.0.0.1:80', '10.0.0.2:80 critical', '10.0.0.4:80'], 'an endpoint that never passed is not written');
    assert.deepEqual(gated[1]?.health, { status: 'critical', output: 'status 503' });
  });

  it('keeps the mark of an unknown endpoint as the registry holds it', () => {
    const gate = healthGate(all, verdicts({}), 50);
    const marked = { ...endpoint(2), health: { status: 'critical' as const, output: 'status 503' } };
    const gated = gateEndpoints(all, gate, [entry(endpoint(1)), entry(marked)], true);
    assert.deepEqual(ids(gated), ['10.0.0.1:80', '10.0.0.2:80 critical']);
  });

  it('writes every endpoint unmarked in panic mode (fail open)', () => {
    const gate = healthGate(all, verdicts({ 1: 'healthy', 2: 'unhealthy', 3: 'unhealthy', 4: 'unhealthy' }), 50);
    assert.equal(gate.selection.panic, true);
    assert.deepEqual(ids(gateEndpoints(all, gate, [], true)), ids(all));
    assert.deepEqual(ids(gateEndpoints(all, gate, [], false)), ids(all));
  });

  it('cuts long probe output to what registries hold', () => {
    const long = 'x'.repeat(1000);
    assert.equal(truncateOutput(long).length, HEALTH_OUTPUT_MAX);
    assert.ok(truncateOutput(long).endsWith('…'));
    assert.equal(truncateOutput('short'), 'short');
  });
});
