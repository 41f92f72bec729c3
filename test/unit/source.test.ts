import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { resolveTargets, type TargetRegistry } from '../../src/controller/targets.ts';
import { desiredEndpoints, selectorMatches, type SourceInput } from '../../src/source/endpoints.ts';
import { slimPod, type SlimPod } from '../../src/source/pods.ts';

function pod(
  name: string,
  o: {
    labels?: Record<string, string>;
    ip?: string;
    ready?: boolean;
    terminating?: boolean;
    phase?: string;
    ports?: { name?: string; containerPort: number }[];
    namespace?: string;
  },
): SlimPod {
  return slimPod({
    metadata: {
      name,
      namespace: o.namespace ?? 'prod',
      labels: o.labels ?? { app: 'user' },
      ...(o.terminating ? { deletionTimestamp: new Date() } : {}),
    },
    spec: { containers: [{ name: 'app', ports: o.ports ?? [{ name: 'http', containerPort: 8080 }] }] },
    status: {
      phase: o.phase ?? 'Running',
      ...(o.ip ? { podIP: o.ip } : {}),
      conditions: [{ type: 'Ready', status: o.ready === false ? 'False' : 'True' }],
    },
  });
}

const selectorSi = (port: number | string = 'http'): SourceInput => ({
  namespace: 'prod',
  name: 'user-service',
  spec: {
    service: 'user-service',
    selector: { matchLabels: { app: 'user' } },
    port,
    tags: { version: '1.0' },
    weight: 2,
    metadata: { team: 'core' },
  },
});

describe('desiredEndpoints from pods', () => {
  const cases: { name: string; pods: SlimPod[]; port?: number | string; ids: string[]; total: number; ready: number; problems?: RegExp }[] =
    [
      {
        name: 'a Ready pod with an IP yields one endpoint on its named container port',
        pods: [pod('a', { ip: '10.0.0.1' })],
        ids: ['10.0.0.1:8080'],
        total: 1,
        ready: 1,
      },
      {
        name: 'a pod that is not Ready is counted but not registered',
        pods: [pod('a', { ip: '10.0.0.1', ready: false })],
        ids: [],
        total: 1,
        ready: 0,
      },
      {
        name: 'a terminating pod leaves at once even while still Ready',
        pods: [pod('a', { ip: '10.0.0.1', terminating: true })],
        ids: [],
        total: 1,
        ready: 0,
      },
      { name: 'a Ready pod without an IP yet is not registered', pods: [pod('a', {})], ids: [], total: 1, ready: 0 },
      {
        name: 'a finished pod is not counted at all',
        pods: [pod('a', { ip: '10.0.0.1', phase: 'Succeeded' })],
        ids: [],
        total: 0,
        ready: 0,
      },
      {
        name: 'pods of other namespaces or labels are ignored',
        pods: [pod('a', { ip: '10.0.0.1', namespace: 'dev' }), pod('b', { ip: '10.0.0.2', labels: { app: 'other' } })],
        ids: [],
        total: 0,
        ready: 0,
      },
      {
        name: 'a numeric port is used as is',
        pods: [pod('a', { ip: '10.0.0.1' })],
        port: 9090,
        ids: ['10.0.0.1:9090'],
        total: 1,
        ready: 1,
      },
      {
        name: 'an unknown port name is a problem for that pod only',
        pods: [pod('a', { ip: '10.0.0.1', ports: [] }), pod('b', { ip: '10.0.0.2' })],
        ids: ['10.0.0.2:8080'],
        total: 2,
        ready: 2,
        problems: /no container port named "http"/,
      },
      {
        name: 'IPv6 pod addresses are bracketed in the instance id',
        pods: [pod('a', { ip: 'fd00::1' })],
        ids: ['[fd00::1]:8080'],
        total: 1,
        ready: 1,
      },
    ];
  for (const c of cases) {
    test(c.name, () => {
      const r = desiredEndpoints(selectorSi(c.port), c.pods);
      assert.deepEqual(
        r.endpoints.map((e) => e.instanceId),
        c.ids,
      );
      assert.equal(r.total, c.total);
      assert.equal(r.ready, c.ready);
      if (c.problems) assert.match(r.problems.join('\n'), c.problems);
      else assert.deepEqual(r.problems, []);
    });
  }

  test('an endpoint carries service, tags, weight, metadata and its source', () => {
    const [e] = desiredEndpoints(selectorSi(), [pod('user-0', { ip: '10.0.0.1' })]).endpoints;
    assert.deepEqual(e, {
      service: 'user-service',
      instanceId: '10.0.0.1:8080',
      address: '10.0.0.1',
      port: 8080,
      weight: 2,
      tags: { version: '1.0' },
      metadata: { team: 'core' },
      source: 'pod/prod/user-0',
    });
  });
});

describe('desiredEndpoints from static endpoints', () => {
  test('per-endpoint port, weight and tags override the defaults; tags merge', () => {
    const r = desiredEndpoints(
      {
        namespace: 'prod',
        name: 'vm',
        spec: {
          service: 'vm',
          port: 80,
          weight: 1,
          tags: { a: '1', z: 'x' },
          endpoints: [{ address: '192.0.2.1' }, { address: '192.0.2.2', port: 81, weight: 7, tags: { z: 'y' } }],
        },
      },
      [],
    );
    assert.deepEqual(
      r.endpoints.map((e) => [e.instanceId, e.weight, e.tags, e.source]),
      [
        ['192.0.2.1:80', 1, { a: '1', z: 'x' }, 'static/prod/vm/0'],
        ['192.0.2.2:81', 7, { a: '1', z: 'y' }, 'static/prod/vm/1'],
      ],
    );
  });

  test('duplicate address:port pairs are registered once and reported', () => {
    const r = desiredEndpoints(
      {
        namespace: 'prod',
        name: 'vm',
        spec: {
          service: 'vm',
          endpoints: [
            { address: '192.0.2.1', port: 80 },
            { address: '192.0.2.1', port: 80 },
          ],
        },
      },
      [],
    );
    assert.equal(r.endpoints.length, 1);
    assert.match(r.problems.join(), /duplicates/);
  });

  test('an endpoint with no port and a named spec.port is a problem, not a crash', () => {
    const r = desiredEndpoints(
      { namespace: 'prod', name: 'vm', spec: { service: 'vm', port: 'http', endpoints: [{ address: '192.0.2.1' }] } },
      [],
    );
    assert.equal(r.endpoints.length, 0);
    assert.match(r.problems.join(), /has no port/);
  });
});

describe('selectorMatches', () => {
  const labels = { app: 'user', tier: 'web' };
  const cases: [string, Parameters<typeof selectorMatches>[0], boolean][] = [
    ['an empty selector matches everything', {}, true],
    ['matchLabels must all match', { matchLabels: { app: 'user', tier: 'db' } }, false],
    ['In matches a listed value', { matchExpressions: [{ key: 'tier', operator: 'In', values: ['web', 'api'] }] }, true],
    ['NotIn rejects a listed value', { matchExpressions: [{ key: 'tier', operator: 'NotIn', values: ['web'] }] }, false],
    ['Exists needs the key', { matchExpressions: [{ key: 'zone', operator: 'Exists' }] }, false],
    ['DoesNotExist needs the key absent', { matchExpressions: [{ key: 'zone', operator: 'DoesNotExist' }] }, true],
    ['an unknown operator matches nothing', { matchExpressions: [{ key: 'app', operator: 'Like' }] }, false],
  ];
  for (const [name, selector, want] of cases) test(name, () => assert.equal(selectorMatches(selector, labels), want));
});

describe('resolveTargets', () => {
  const reg = (name: string, env: string, isDefault: boolean): TargetRegistry => ({
    metadata: { name },
    spec: { default: isDefault, namespaceSelector: { matchLabels: { env } } },
  });
  const all = [reg('prod-etcd', 'prod', true), reg('dev-etcd', 'dev', true), reg('prod-consul', 'prod', false)];

  test('with no names, every default Registry that admits the namespace is a target', () => {
    const r = resolveTargets(undefined, 'prod', { env: 'prod' }, all);
    assert.deepEqual(
      r.targets.map((t) => t.metadata?.name),
      ['prod-etcd'],
    );
    assert.deepEqual(r.refusals, []);
  });

  test('a named Registry that does not admit the namespace is refused, never a target', () => {
    const r = resolveTargets(['prod-etcd'], 'dev', { env: 'dev' }, all);
    assert.deepEqual(r.targets, []);
    assert.equal(r.refusals[0]?.reason, 'NamespaceNotAdmitted');
  });

  test('a named Registry that does not exist is refused', () => {
    const r = resolveTargets(['nope'], 'prod', { env: 'prod' }, all);
    assert.equal(r.refusals[0]?.reason, 'RegistryNotFound');
  });

  test('a named non-default Registry that admits the namespace is a target', () => {
    const r = resolveTargets(['prod-consul'], 'prod', { env: 'prod' }, all);
    assert.deepEqual(
      r.targets.map((t) => t.metadata?.name),
      ['prod-consul'],
    );
  });

  test('a Registry without a namespaceSelector admits nothing', () => {
    const r = resolveTargets(undefined, 'prod', { env: 'prod' }, [{ metadata: { name: 'x' }, spec: { default: true } }]);
    assert.deepEqual(r.targets, []);
  });
});

describe('slimPod', () => {
  test('keeps what decides registration and shares one frozen port list between pods that declare the same', () => {
    const a = pod('a', { ip: '10.0.0.1', labels: { app: 'user', tier: 'web' } });
    const b = pod('b', { ip: '10.0.0.2', labels: { app: 'user', tier: 'web' } });
    const c = pod('c', { ip: '10.0.0.3', ports: [{ name: 'grpc', containerPort: 9090 }] });
    assert.deepEqual(a.metadata, { name: 'a', namespace: 'prod', labels: { app: 'user', tier: 'web' }, terminating: false });
    assert.deepEqual([a.ip, a.ready, a.finished], ['10.0.0.1', true, false]);
    assert.deepEqual(a.ports, [{ name: 'http', containerPort: 8080 }]);
    assert.equal(a.ports, b.ports, 'one list for both pods');
    assert.ok(Object.isFrozen(a.ports) && Object.isFrozen(a.ports[0]));
    assert.notEqual(a.ports, c.ports);
    assert.deepEqual(c.ports, [{ name: 'grpc', containerPort: 9090 }]);
    assert.deepEqual(pod('d', { ports: [] }).ports, []);
  });
});
