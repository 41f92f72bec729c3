import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import type { AgentCheckRecord, AgentServiceRecord, ServiceRegistration } from '../../src/registry/consul/client.ts';
import type { HealthCheckUpdate } from '../../src/registry/consul/codec.ts';
import {
  aliasCheckId,
  ConsulEncodingError,
  decodeService,
  differsFromRegistration,
  drainCheckId,
  HEALTH_CHECK_NAME,
  healthCheckId,
  healthCheckUpdate,
  healthOutput,
  heartbeatCheckId,
  heartbeatIsCurrent,
  heartbeatRegistration,
  heartbeatServiceId,
  instanceMeta,
  instanceRegistration,
  instanceServiceId,
  META_MAX_PAIRS,
  META_MAX_VALUE_BYTES,
} from '../../src/registry/consul/codec.ts';
import { UNKNOWN_OWNER } from '../../src/registry/owner.ts';
import { HEALTH_OUTPUT_MAX } from '../../src/registry/types.ts';
import type { RegistryEntry } from '../../src/registry/types.ts';

const owner = { clusterId: 'c1', namespace: 'prod', name: 'user' };
const context = { clusterId: 'c1', name: 'prod-user', heartbeatServiceId: heartbeatServiceId('c1', 'prod'), deregisterAfterSeconds: 90 };

function entry(address: string, extra: Partial<RegistryEntry['endpoint']> = {}): RegistryEntry {
  const host = address.includes(':') ? `[${address}]` : address;
  return {
    registryNamespace: 'prod',
    k8sNamespace: 'prod',
    owner,
    endpoint: {
      service: 'user',
      instanceId: `${host}:8080`,
      address,
      port: 8080,
      weight: 2,
      tags: { zone: 'a', version: '1.0' },
      metadata: { team: 'core' },
      source: 'pod/prod/user-1',
      ...extra,
    },
  };
}

/**
 * What the agent gives back for a registration (and the health check update sent after it): the
 * registered fields, as /v1/agent/services and /v1/agent/checks show them.
 */
function stored(reg: ServiceRegistration, update?: HealthCheckUpdate): { record: AgentServiceRecord; checks: AgentCheckRecord[] } {
  return {
    record: {
      ID: reg.ID,
      Service: reg.Name,
      Tags: [...reg.Tags],
      Meta: { ...reg.Meta },
      Address: reg.Address,
      Port: reg.Port,
      Weights: { ...reg.Weights },
    },
    checks: reg.Checks.map((c) => ({
      CheckID: c.CheckID,
      ServiceID: reg.ID,
      Status: c.CheckID === update?.checkId ? update.status : (c.Status ?? 'passing'),
      Type: c.AliasService !== undefined ? 'alias' : 'ttl',
      Output: c.CheckID === update?.checkId ? update.output : '',
    })),
  };
}

function roundTrip(e: RegistryEntry): RegistryEntry | undefined {
  const reg = instanceRegistration(e, context);
  const { record, checks } = stored(reg, healthCheckUpdate(reg.ID, e.endpoint.health));
  return decodeService(
    record,
    { registryNamespace: 'prod', service: 'user' },
    checks.some((c) => c.CheckID === drainCheckId(reg.ID)),
  )?.entry;
}

void describe('Consul service ids', () => {
  void it('an instance id is the same every time for the same cluster, namespace, service and instance', () => {
    assert.equal(instanceServiceId('c1', 'prod', 'user', '10.0.0.1:8080'), instanceServiceId('c1', 'prod', 'user', '10.0.0.1:8080'));
  });

  void it('an instance id changes with each of cluster, registry namespace, service and instance', () => {
    const base = instanceServiceId('c1', 'prod', 'user', '10.0.0.1:8080');
    for (const other of [
      instanceServiceId('c2', 'prod', 'user', '10.0.0.1:8080'),
      instanceServiceId('c1', 'dev', 'user', '10.0.0.1:8080'),
      instanceServiceId('c1', 'prod', 'order', '10.0.0.1:8080'),
      instanceServiceId('c1', 'prod', 'user', '10.0.0.2:8080'),
    ]) {
      assert.notEqual(other, base);
    }
  });

  void it('ids stay readable and contain no slash, whatever the instance id holds', () => {
    const id = instanceServiceId('c1', 'prod', 'user', '[fd00::1]:8080');
    assert.match(id, /^kr-user-_fd00::1_:8080-[0-9a-f]{12}$/);
    assert.match(heartbeatServiceId('c1', 'prod'), /^kr-heartbeat-prod-[0-9a-f]{12}$/);
    assert.equal(heartbeatCheckId('hb'), 'hb:ttl');
  });

  void it('two clusters get different heartbeats in the same registry namespace', () => {
    assert.notEqual(heartbeatServiceId('c1', 'prod'), heartbeatServiceId('c2', 'prod'));
  });
});

void describe('Consul instance registration', () => {
  void it('carries name, k=v tags sorted by key, address, port and the weight as Weights.Passing', () => {
    const reg = instanceRegistration(entry('10.0.0.12'), context);
    assert.equal(reg.Name, 'prod-user');
    assert.deepEqual(reg.Tags, ['version=1.0', 'zone=a']);
    assert.equal(reg.Address, '10.0.0.12');
    assert.equal(reg.Port, 8080);
    assert.deepEqual(reg.Weights, { Passing: 2, Warning: 1 });
  });

  void it('carries owner, namespaces, source, tags and metadata in Meta, and plain copies of valid metadata keys', () => {
    const meta = instanceRegistration(entry('10.0.0.12'), context).Meta;
    assert.equal(meta['kr-owner-cluster'], 'c1');
    assert.equal(meta['kr-owner-namespace'], 'prod');
    assert.equal(meta['kr-owner-name'], 'user');
    assert.equal(meta['kr-k8s-namespace'], 'prod');
    assert.equal(meta['kr-registry-namespace'], 'prod');
    assert.equal(meta['kr-source'], 'pod/prod/user-1');
    assert.equal(meta['kr-tags'], '{"version":"1.0","zone":"a"}');
    assert.equal(meta['kr-metadata'], '{"team":"core"}');
    assert.equal(meta['team'], 'core');
  });

  void it('liveness is an alias check on the heartbeat with DeregisterCriticalServiceAfter', () => {
    const reg = instanceRegistration(entry('10.0.0.12'), context);
    assert.deepEqual(
      reg.Checks.map((c) => [c.CheckID, c.AliasService, c.DeregisterCriticalServiceAfter]),
      [[aliasCheckId(reg.ID), context.heartbeatServiceId, '90s']],
    );
  });

  void it('a weight-0 endpoint is registered with weight 1 and a critical check that keeps it out of rotation', () => {
    const reg = instanceRegistration(entry('10.0.0.12', { weight: 0 }), context);
    assert.deepEqual(reg.Weights, { Passing: 1, Warning: 1 });
    const drain = reg.Checks.find((c) => c.CheckID === drainCheckId(reg.ID));
    assert.equal(drain?.Status, 'critical');
    assert.equal(drain?.DeregisterCriticalServiceAfter, undefined);
  });

  void it('metadata keys Consul refuses, or that collide with kube-registrar or Consul prefixes, are kept in JSON only', () => {
    const meta = instanceMeta(
      entry('10.0.0.12', { metadata: { 'app.kubernetes.io/name': 'x', 'kr-owner-name': 'spoof', 'consul-x': 'y', long: 'v'.repeat(600) } }),
      context,
    );
    assert.equal(meta['kr-owner-name'], 'user');
    assert.equal(meta['app.kubernetes.io/name'], undefined);
    assert.equal(meta['consul-x'], undefined);
    assert.equal(meta['long'], undefined);
  });

  void it('long tags and metadata are split over several Meta keys, none longer than Consul allows', () => {
    const metadata = Object.fromEntries(Array.from({ length: 30 }, (_, i) => [`key.${i}`, `välue-${'x'.repeat(40)}-${i}`]));
    const meta = instanceMeta(entry('10.0.0.12', { metadata }), context);
    assert.ok(meta['kr-metadata-1'] !== undefined);
    for (const value of Object.values(meta)) assert.ok(Buffer.byteLength(value) <= META_MAX_VALUE_BYTES);
    assert.ok(Object.keys(meta).length <= META_MAX_PAIRS);
  });

  void it('an entry whose Meta cannot fit is refused with a message that says what to shorten', () => {
    const metadata = Object.fromEntries(Array.from({ length: 200 }, (_, i) => [`key-${i}`, 'y'.repeat(200)]));
    assert.throws(
      () => instanceMeta(entry('10.0.0.12', { metadata }), context),
      (err: unknown) => err instanceof ConsulEncodingError && /shorten/.test(err.message),
    );
    assert.throws(() => instanceMeta(entry('10.0.0.12', { source: 's'.repeat(600) }), context), ConsulEncodingError);
  });
});

void describe('Consul instance registration of an endpoint failing its health check', () => {
  const health = { status: 'critical', output: 'HTTP GET http://10.0.0.12:8080/healthz: status 503, want 200-399' } as const;

  void it('keeps the alias check and adds a critical TTL check that carries the output and never reaps the instance', () => {
    const reg = instanceRegistration(entry('10.0.0.12', { health }), context);
    assert.deepEqual(
      reg.Checks.map((c) => [c.CheckID, c.Name, c.Status, c.Notes, c.AliasService, c.TTL, c.DeregisterCriticalServiceAfter]),
      [
        [aliasCheckId(reg.ID), 'kube-registrar lease', 'passing', reg.Checks[0]?.Notes, context.heartbeatServiceId, undefined, '90s'],
        [`${reg.ID}:health`, HEALTH_CHECK_NAME, 'critical', health.output, undefined, '87600h', undefined],
      ],
    );
    assert.equal(healthCheckId(reg.ID), `${reg.ID}:health`);
  });

  void it('records the mark in Meta next to the other kube-registrar keys', () => {
    const meta = instanceRegistration(entry('10.0.0.12', { health }), context).Meta;
    assert.equal(meta['kr-health'], 'critical');
    assert.equal(meta['kr-health-output'], health.output);
    assert.equal(meta['kr-health-output-1'], undefined);
  });

  void it('a healthy endpoint is registered exactly as before: no health check and no health Meta', () => {
    const reg = instanceRegistration(entry('10.0.0.12'), context);
    assert.deepEqual(
      reg.Checks.map((c) => c.CheckID),
      [aliasCheckId(reg.ID)],
    );
    assert.deepEqual(
      Object.keys(reg.Meta).filter((k) => k.startsWith('kr-health')),
      [],
    );
    assert.equal(healthCheckUpdate(reg.ID, undefined), undefined);
  });

  void it('a weight-0 endpoint failing its health check carries both critical checks', () => {
    const reg = instanceRegistration(entry('10.0.0.12', { weight: 0, health }), context);
    assert.deepEqual(
      reg.Checks.map((c) => c.CheckID),
      [aliasCheckId(reg.ID), drainCheckId(reg.ID), healthCheckId(reg.ID)],
    );
  });

  void it('the update sent after registering sets the same check critical with the output', () => {
    const reg = instanceRegistration(entry('10.0.0.12', { health }), context);
    assert.deepEqual(healthCheckUpdate(reg.ID, health), { checkId: healthCheckId(reg.ID), status: 'critical', output: health.output });
  });

  void it('an output of non-ASCII text longer than a Meta value may be is split over two keys at a character boundary', () => {
    const output = 'ü✓'.repeat(HEALTH_OUTPUT_MAX / 2);
    const meta = instanceRegistration(entry('10.0.0.12', { health: { status: 'critical', output } }), context).Meta;
    assert.ok(meta['kr-health-output-1'] !== undefined);
    for (const value of Object.values(meta)) assert.ok(Buffer.byteLength(value) <= META_MAX_VALUE_BYTES);
    assert.equal(`${meta['kr-health-output']}${meta['kr-health-output-1']}`, output);
  });

  void it('an output longer than HEALTH_OUTPUT_MAX is cut to it everywhere it is written, never in half a character', () => {
    const long = 'x'.repeat(HEALTH_OUTPUT_MAX + 100);
    assert.equal(healthOutput(long), 'x'.repeat(HEALTH_OUTPUT_MAX));
    const emoji = `${'x'.repeat(HEALTH_OUTPUT_MAX - 1)}😀 and more`;
    assert.equal(healthOutput(emoji), 'x'.repeat(HEALTH_OUTPUT_MAX - 1));
    const exact = 'y'.repeat(HEALTH_OUTPUT_MAX);
    assert.equal(healthOutput(exact), exact);
    const reg = instanceRegistration(entry('10.0.0.12', { health: { status: 'critical', output: long } }), context);
    assert.equal(reg.Meta['kr-health-output'], 'x'.repeat(HEALTH_OUTPUT_MAX));
    assert.equal(reg.Checks.find((c) => c.CheckID === healthCheckId(reg.ID))?.Notes, 'x'.repeat(HEALTH_OUTPUT_MAX));
    assert.equal(healthCheckUpdate(reg.ID, { status: 'critical', output: long })?.output, 'x'.repeat(HEALTH_OUTPUT_MAX));
  });

  const drifts: [string, (checks: AgentCheckRecord[], id: string) => AgentCheckRecord[]][] = [
    [
      'its health check was passed by hand',
      (checks, id) => checks.map((c) => (c.CheckID === healthCheckId(id) ? { ...c, Status: 'passing' } : c)),
    ],
    [
      "its health check's output was never set (the update call failed)",
      (checks, id) => checks.map((c) => (c.CheckID === healthCheckId(id) ? { ...c, Output: '' } : c)),
    ],
    ['its health check is missing', (checks, id) => checks.filter((c) => c.CheckID !== healthCheckId(id))],
  ];
  for (const [name, drift] of drifts) {
    void it(`a failing endpoint's service differs from its registration when ${name}`, () => {
      const reg = instanceRegistration(entry('10.0.0.12', { health }), context);
      const update = healthCheckUpdate(reg.ID, health);
      const { record, checks } = stored(reg, update);
      assert.equal(differsFromRegistration(record, checks, reg, update), false);
      assert.equal(differsFromRegistration(record, drift(checks, reg.ID), reg, update), true);
    });
  }

  void it("a healthy endpoint's service differs from its registration while a health check is left on it", () => {
    const failing = instanceRegistration(entry('10.0.0.12', { health }), context);
    const { checks } = stored(failing, healthCheckUpdate(failing.ID, health));
    const healthy = instanceRegistration(entry('10.0.0.12'), context);
    const { record } = stored(healthy);
    assert.equal(differsFromRegistration(record, checks, healthy), true);
  });

  void it('a mark this version does not know reads back as no mark, and the Meta difference gets it rewritten', () => {
    const reg = instanceRegistration(entry('10.0.0.12', { health }), context);
    const { record, checks } = stored(reg, healthCheckUpdate(reg.ID, health));
    const odd = { ...record, Meta: { ...record.Meta, 'kr-health': 'warning' } };
    const decoded = decodeService(odd, { registryNamespace: 'prod', service: 'user' }, false);
    assert.equal(decoded?.entry.endpoint.health, undefined);
    const healthy = instanceRegistration(entry('10.0.0.12'), context);
    assert.equal(differsFromRegistration(odd, checks, healthy), true);
  });
});

void describe('reading Consul services back', () => {
  const cases: [string, RegistryEntry][] = [
    ['an IPv4 endpoint', entry('10.0.0.12')],
    ['an IPv6 endpoint', entry('fd00::12')],
    ['a host name endpoint', entry('vm-1.example.com')],
    ['an endpoint with weight 0', entry('10.0.0.12', { weight: 0 })],
    [
      'an endpoint with non-ASCII, empty and "=" in tags and metadata',
      entry('10.0.0.12', { tags: { 'a=b': 'c=d', empty: '' }, metadata: { 'notes.io/x': 'ünïcode ✓', team: '' } }),
    ],
    [
      'an endpoint failing its health check',
      entry('10.0.0.12', { health: { status: 'critical', output: 'dial tcp 10.0.0.12:8080: connection refused' } }),
    ],
    ['an endpoint failing its health check with an empty output', entry('10.0.0.12', { health: { status: 'critical', output: '' } })],
    [
      'an endpoint failing its health check with a long non-ASCII output',
      entry('10.0.0.12', { health: { status: 'critical', output: 'ü✓'.repeat(HEALTH_OUTPUT_MAX / 2) } }),
    ],
    [
      'an endpoint with weight 0 failing its health check',
      entry('10.0.0.12', { weight: 0, health: { status: 'critical', output: 'status 500' } }),
    ],
    [
      'an endpoint with long metadata',
      entry('10.0.0.12', { metadata: Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`k${i}`, 'z'.repeat(100)])) }),
    ],
  ];
  for (const [name, e] of cases) {
    void it(`${name} reads back as the entry that was written`, () => {
      assert.deepEqual(roundTrip(e), e);
    });
  }

  void it('a service as freshly registered does not differ from its registration', () => {
    const reg = instanceRegistration(entry('10.0.0.12'), context);
    const { record, checks } = stored(reg);
    assert.equal(differsFromRegistration(record, checks, reg), false);
  });

  void it('a healthy endpoint reads back without a health key at all', () => {
    assert.equal(Object.hasOwn(roundTrip(entry('10.0.0.12'))?.endpoint ?? {}, 'health'), false);
  });

  const edits: [
    string,
    (s: { record: AgentServiceRecord; checks: AgentCheckRecord[] }) => { record: AgentServiceRecord; checks: AgentCheckRecord[] },
  ][] = [
    ['its tags were edited by hand', (s) => ({ ...s, record: { ...s.record, Tags: ['zone=b'] } })],
    ['its Meta was edited by hand', (s) => ({ ...s, record: { ...s.record, Meta: { ...s.record.Meta, extra: '1' } } })],
    ['its weights were edited by hand', (s) => ({ ...s, record: { ...s.record, Weights: { Passing: 9, Warning: 1 } } })],
    ['it carries another name (the serviceName template changed)', (s) => ({ ...s, record: { ...s.record, Service: 'user' } })],
    ['its alias check was removed', (s) => ({ ...s, checks: [] })],
  ];
  for (const [name, edit] of edits) {
    void it(`a service differs from its registration when ${name}`, () => {
      const reg = instanceRegistration(entry('10.0.0.12'), context);
      const { record, checks } = edit(stored(reg));
      assert.equal(differsFromRegistration(record, checks, reg), true);
    });
  }

  void it('a check added by hand does not count as a difference', () => {
    const reg = instanceRegistration(entry('10.0.0.12'), context);
    const { record, checks } = stored(reg);
    assert.equal(
      differsFromRegistration(
        record,
        [...checks, { CheckID: 'ops-http', ServiceID: reg.ID, Status: 'passing', Type: 'http', Output: 'HTTP GET /: 200 OK' }],
        reg,
      ),
      false,
    );
  });

  void it('a service nobody owns reads as owned by nobody, at address:port, with its tags and Meta', () => {
    const decoded = decodeService(
      {
        ID: 'web-1',
        Service: 'prod-user',
        Tags: ['zone=a', 'canary'],
        Meta: { team: 'ops' },
        Address: '10.0.0.9',
        Port: 80,
        Weights: { Passing: 3, Warning: 1 },
      },
      { registryNamespace: 'prod', service: 'user' },
      false,
    );
    assert.equal(decoded?.managed, false);
    assert.deepEqual(decoded?.entry, {
      registryNamespace: 'prod',
      k8sNamespace: '',
      owner: UNKNOWN_OWNER,
      endpoint: {
        service: 'user',
        instanceId: '10.0.0.9:80',
        address: '10.0.0.9',
        port: 80,
        weight: 3,
        tags: { zone: 'a', canary: '' },
        metadata: { team: 'ops' },
        source: 'consul/web-1',
      },
    });
  });

  void it('a copy of our Meta under an id we would not have chosen is owned by nobody, so it is never touched', () => {
    const { record } = stored(instanceRegistration(entry('10.0.0.12'), context));
    const decoded = decodeService({ ...record, ID: 'hand-made' }, { registryNamespace: 'prod', service: 'user' }, false);
    assert.deepEqual(decoded?.entry.owner, UNKNOWN_OWNER);
  });

  void it('our services of another registry namespace sharing the Consul name belong to another scope', () => {
    const { record } = stored(instanceRegistration({ ...entry('10.0.0.12'), registryNamespace: 'dev' }, context));
    assert.equal(decodeService(record, { registryNamespace: 'prod', service: 'user' }, false), undefined);
  });

  void it('heartbeats are not entries', () => {
    const reg = heartbeatRegistration({
      clusterId: 'c1',
      registryNamespace: 'prod',
      name: 'prod-kube-registrar-heartbeat',
      ttlSeconds: 30,
      deregisterAfterSeconds: 150,
    });
    const { record } = stored(reg);
    assert.equal(decodeService(record, { registryNamespace: 'prod', service: 'kube-registrar-heartbeat' }, false), undefined);
  });
});

void describe('Consul heartbeat registration', () => {
  const reg = heartbeatRegistration({
    clusterId: 'c1',
    registryNamespace: 'prod',
    name: 'prod-kube-registrar-heartbeat',
    ttlSeconds: 30,
    deregisterAfterSeconds: 150,
  });

  void it('is one passing TTL check with DeregisterCriticalServiceAfter, at the deterministic id', () => {
    assert.equal(reg.ID, heartbeatServiceId('c1', 'prod'));
    assert.deepEqual(
      reg.Checks.map((c) => [c.CheckID, c.TTL, c.Status, c.DeregisterCriticalServiceAfter]),
      [[heartbeatCheckId(reg.ID), '30s', 'passing', '150s']],
    );
  });

  void it('is current only with the same TTL and reap delay', () => {
    const { record } = stored(reg);
    assert.equal(heartbeatIsCurrent(record, 30, 150), true);
    assert.equal(heartbeatIsCurrent(record, 20, 150), false);
    assert.equal(heartbeatIsCurrent(record, 30, 120), false);
  });
});
