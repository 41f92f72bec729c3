import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { ConsulRegistry } from '../../src/registry/consul/consul-registry.ts';
import type { ConsulRegistryOptions } from '../../src/registry/consul/consul-registry.ts';
import { TemplateError } from '../../src/registry/template.ts';

const base: ConsulRegistryOptions = { address: 'http://127.0.0.1:1', clusterId: 'c1' };

void describe('Consul registry options', () => {
  const refused: [string, Partial<ConsulRegistryOptions>, RegExp | (new (...args: never[]) => Error)][] = [
    ['an address that is not a URL', { address: 'consul:8500' }, /not a URL|must start with http/],
    ['an address of another scheme', { address: 'ftp://consul:8500' }, /must start with http/],
    ['a TTL below 3 seconds', { leaseTtlSeconds: 2 }, /leaseTtlSeconds/],
    ['a fractional TTL', { leaseTtlSeconds: 7.5 }, /leaseTtlSeconds/],
    ["a reap delay below Consul's one-minute minimum", { deregisterCriticalAfterSeconds: 30 }, /at least 60/],
    ['a non-positive call timeout', { callTimeoutMs: 0 }, /callTimeoutMs/],
    ['no concurrency', { maxConcurrentCalls: 0 }, /maxConcurrentCalls/],
    ['an empty cluster id', { clusterId: '' }, /clusterId/],
    ['a serviceName template with an unknown placeholder', { serviceNameTemplate: '{cluster}-{service}' }, TemplateError],
    ['a namespace template with {service}', { namespaceTemplate: 'team-{service}' }, TemplateError],
  ];
  for (const [name, options, expected] of refused) {
    void it(`refuses ${name} before any call`, () => {
      assert.throws(() => new ConsulRegistry({ ...base, ...options }), expected);
    });
  }

  void it('accepts the defaults and closes without ever having called the agent', async () => {
    const registry = new ConsulRegistry(base);
    assert.equal(registry.leaseIdFor('prod'), undefined);
    await registry.close();
    await assert.rejects(registry.records({ registryNamespace: 'prod', service: 'user' }), /closed/);
  });

  void it('declares that it marks endpoints failing their health check instead of dropping them', async () => {
    const registry = new ConsulRegistry(base);
    assert.equal(registry.marksUnhealthy, true);
    await registry.close();
  });
});
