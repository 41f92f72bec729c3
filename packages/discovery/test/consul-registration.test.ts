import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { DiscoveryConfigError } from '../src/errors.ts';
import { ownedBy, selfOwner, selfRegistration, selfServiceId, type SelfContext } from '../src/consul/registration.ts';

const context: SelfContext = {
  hostname: 'vm-1',
  pid: 4242,
  namespace: 'prod',
  name: 'prod-billing',
  ttlSeconds: 9,
  deregisterAfterSeconds: 60,
};

describe('selfRegistration', () => {
  test('writes the Meta, Tags, Weights and TTL check a consumer and the operator expect', () => {
    const body = selfRegistration(
      {
        service: 'billing',
        address: '10.9.0.1',
        port: 8443,
        weight: 3,
        tags: { zone: 'a', version: '2' },
        metadata: { team: 'pay', 'a b': 'c' },
      },
      context,
    );
    assert.equal(body.ID, selfServiceId('vm-1', 'prod', 'billing', '10.9.0.1:8443'));
    assert.match(body.ID, /^kr-self-billing-10\.9\.0\.1:8443-[0-9a-f]{12}$/);
    assert.equal(body.Name, 'prod-billing');
    assert.deepEqual(body.Tags, ['version=2', 'zone=a']);
    assert.deepEqual(body.Weights, { Passing: 3, Warning: 1 });
    assert.deepEqual(body.Meta, {
      'kr-owner-cluster': 'process:vm-1',
      'kr-owner-namespace': 'prod',
      'kr-owner-name': 'billing',
      'kr-registry-namespace': 'prod',
      'kr-service': 'billing',
      'kr-instance': '10.9.0.1:8443',
      'kr-source': 'process:vm-1/4242',
      'kr-tags': '{"version":"2","zone":"a"}',
      'kr-metadata': '{"a b":"c","team":"pay"}',
      team: 'pay',
    });
    assert.deepEqual(
      body.Checks.map((c) => [c.CheckID, c.TTL, c.Status, c.DeregisterCriticalServiceAfter]),
      [[`${body.ID}:ttl`, '9s', 'passing', '60s']],
    );
  });

  test('weight 0 is written as the operator writes it: weight 1 and a check held critical', () => {
    const body = selfRegistration({ service: 'billing', address: '10.9.0.1', port: 8443, weight: 0 }, context);
    assert.equal(body.Weights.Passing, 1);
    assert.deepEqual(
      body.Checks.map((c) => [c.CheckID, c.Status]),
      [
        [`${body.ID}:ttl`, 'passing'],
        [`${body.ID}:weight-zero`, 'critical'],
      ],
    );
  });

  test('an IPv6 address gives the bracketed instance id', () => {
    const body = selfRegistration({ service: 'billing', address: 'fd00::1', port: 80 }, context);
    assert.equal(body.Meta['kr-instance'], '[fd00::1]:80');
  });

  const refused: { name: string; endpoint: Parameters<typeof selfRegistration>[0] }[] = [
    { name: 'an empty address', endpoint: { service: 's', address: '', port: 80 } },
    { name: 'port 0', endpoint: { service: 's', address: '10.0.0.1', port: 0 } },
    { name: 'a weight above 1000', endpoint: { service: 's', address: '10.0.0.1', port: 80, weight: 1001 } },
    {
      name: 'metadata too long for Consul’s 64 Meta pairs',
      endpoint: { service: 's', address: '10.0.0.1', port: 80, metadata: { k: 'x'.repeat(40_000) } },
    },
  ];
  for (const c of refused) {
    test(`${c.name} is refused before anything is written`, () => {
      assert.throws(() => selfRegistration(c.endpoint, context), DiscoveryConfigError);
    });
  }
});

describe('ids and owners', () => {
  test('ids differ per host, namespace, service and instance, and never take the form of the operator’s ids', () => {
    const ids = new Set([
      selfServiceId('vm-1', 'prod', 's', '10.0.0.1:80'),
      selfServiceId('vm-2', 'prod', 's', '10.0.0.1:80'),
      selfServiceId('vm-1', 'dev', 's', '10.0.0.1:80'),
      selfServiceId('vm-1', 'prod', 't', '10.0.0.1:80'),
      selfServiceId('vm-1', 'prod', 's', '10.0.0.1:81'),
    ]);
    assert.equal(ids.size, 5);
    for (const id of ids) assert.match(id, /^kr-self-/);
  });

  test('only Meta naming the same host, namespace and service counts as ours', () => {
    const owner = selfOwner('vm-1', 'prod', 's');
    const meta = { 'kr-owner-cluster': 'process:vm-1', 'kr-owner-namespace': 'prod', 'kr-owner-name': 's' };
    assert.equal(ownedBy(meta, owner), true);
    assert.equal(ownedBy({ ...meta, 'kr-owner-cluster': 'process:vm-2' }, owner), false);
    assert.equal(ownedBy({ ...meta, 'kr-owner-cluster': 'b1c2-uid-of-kube-system' }, owner), false);
    assert.equal(ownedBy({}, owner), false);
  });
});
