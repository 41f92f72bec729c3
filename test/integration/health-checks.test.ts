/**
 * Active health checks of static endpoints, end to end: the operator probes real HTTP, TCP and
 * gRPC health servers on loopback, takes failing endpoints out of etcd and marks them critical in
 * Consul, puts them back when they recover, fails open in panic mode, and keeps what is registered
 * through a failover.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { KubeConfig } from '@kubernetes/client-node';
import { Etcd3 } from 'etcd3';
import { adminKubeConfig, bedEnv, uniqueSuffix } from '../support/env.ts';
import { GrpcHealthServer, HttpHealthServer, TcpHealthServer } from '../support/health-servers.ts';
import {
  createNamespace,
  createRegistry,
  createServiceInstance,
  eventsFor,
  eventually,
  getServiceInstance,
  installCrds,
  patchServiceInstance,
} from '../support/kube.ts';
import { metricValue, requireMetric, startOperator, type OperatorProcess } from '../support/operator.ts';

const CONSUL = bedEnv('CONSUL_HTTP_ADDR');
/** Generous: the first run on a loaded 2-core machine is slow; the bound under test is counted in probes, not seconds. */
const WAIT_MS = 60_000;

interface HealthView {
  healthy: number;
  unhealthy: number;
  unknown: number;
  panic: boolean;
  unhealthyEndpoints?: { address: string; port: number; lastFailure: string; since: string }[];
}

interface Condition {
  type: string;
  status: string;
  reason: string;
  message: string;
}

async function statusOf(kc: KubeConfig, ns: string, name: string): Promise<{ health?: HealthView; conditions: Condition[] }> {
  const si = (await getServiceInstance(kc, ns, name)) as { status?: { health?: HealthView; conditions?: Condition[] } } | undefined;
  return { ...(si?.status?.health ? { health: si.status.health } : {}), conditions: si?.status?.conditions ?? [] };
}

function condition(conditions: readonly Condition[], type: string): Condition | undefined {
  return conditions.find((c) => c.type === type);
}

/** Ports of the instances registered in etcd under `dir`, sorted. */
async function etcdPorts(etcd: Etcd3, dir: string): Promise<number[]> {
  const keys = Object.keys(await etcd.getAll().prefix(dir).strings());
  return keys.map((k) => Number(k.slice(k.lastIndexOf(':') + 1))).sort((a, b) => a - b);
}

/** Every instance of a Consul service with its aggregated status and the output of its failing checks. */
async function consulInstances(name: string): Promise<Map<number, { status: string; output: string }>> {
  const res = await fetch(`${CONSUL}/v1/health/service/${encodeURIComponent(name)}`, { signal: AbortSignal.timeout(20_000) });
  if (!res.ok) throw new Error(`GET /v1/health/service/${name}: ${res.status}`);
  const body = (await res.json()) as { Service: { Port: number }; Checks: { Status: string; Output: string; Notes: string }[] }[];
  const rank = { passing: 0, warning: 1, critical: 2 } as Record<string, number>;
  return new Map(
    body.map((e) => {
      const failing = e.Checks.filter((c) => c.Status !== 'passing');
      const status = e.Checks.reduce((worst, c) => ((rank[c.Status] ?? 2) > (rank[worst] ?? 0) ? c.Status : worst), 'passing');
      return [e.Service.Port, { status, output: failing.map((c) => `${c.Output} ${c.Notes}`).join(' ') }];
    }),
  );
}

async function passingPorts(name: string): Promise<number[]> {
  const res = await fetch(`${CONSUL}/v1/health/service/${encodeURIComponent(name)}?passing=true`, { signal: AbortSignal.timeout(20_000) });
  const body = (await res.json()) as { Service: { Port: number } }[];
  return body.map((e) => e.Service.Port).sort((a, b) => a - b);
}

function sorted(ports: readonly number[]): number[] {
  return [...ports].sort((a, b) => a - b);
}

const servers: { close(): unknown }[] = [];
const operators: OperatorProcess[] = [];
const etcd = new Etcd3({ hosts: bedEnv('ETCD_ENDPOINTS').split(',') });
after(async () => {
  for (const op of operators) await op.process.stop();
  for (const s of servers) await s.close();
  etcd.close();
});

/** A namespace with an etcd Registry and a Consul Registry that admit only it. */
async function setUp(kc: KubeConfig, ns: string, sfx: string): Promise<{ prefix: string }> {
  await installCrds(kc);
  await createNamespace(kc, ns, { hc: ns });
  const prefix = `/hc-${sfx}`;
  await createRegistry(kc, `${ns}-etcd`, {
    type: 'etcd',
    default: true,
    namespaceSelector: { matchLabels: { hc: ns } },
    leaseTTLSeconds: 20,
    etcd: { endpoints: [bedEnv('ETCD_ENDPOINTS')], prefix },
  });
  await createRegistry(kc, `${ns}-consul`, {
    type: 'consul',
    default: true,
    namespaceSelector: { matchLabels: { hc: ns } },
    leaseTTLSeconds: 20,
    consul: { address: CONSUL, serviceName: '{namespace}-{service}' },
  });
  return { prefix };
}

test('an HTTP business probe ejects failing endpoints from etcd, marks them critical in Consul, re-admits them, fails open in panic mode, and stops gating when the check is removed', async (t) => {
  const kc = adminKubeConfig();
  const sfx = uniqueSuffix();
  const ns = `hc-${sfx}`;
  const { prefix } = await setUp(kc, ns, sfx);
  const [a, b, c, d] = await Promise.all([
    HttpHealthServer.start(),
    HttpHealthServer.start(),
    HttpHealthServer.start(),
    HttpHealthServer.start(),
  ]);
  assert.ok(a && b && c && d);
  servers.push(a, b, c, d);
  d.set('redis-down'); // fails from the start: never registered
  const dir = `${prefix}/${ns}/orders/`;
  const consulName = `${ns}-orders`;
  const puts: string[] = [];
  const deletes: { key: string; at: number }[] = [];
  const watcher = await etcd.watch().prefix(dir).create();
  watcher.on('put', (kv) => puts.push(kv.key.toString()));
  watcher.on('delete', (kv) => deletes.push({ key: kv.key.toString(), at: Date.now() }));
  t.after(() => watcher.cancel());

  const op = await startOperator([`--watch-namespaces=${ns}`, '--resync-period=30']);
  operators.push(op);
  await createServiceInstance(kc, ns, 'orders', {
    service: 'orders',
    endpoints: [a, b, c, d].map((s) => ({ address: '127.0.0.1', port: s.port })),
    healthCheck: {
      http: { path: '/healthz', expectedJSON: { db: 'ok', redis: 'ok' } },
      intervalSeconds: 1,
      timeoutSeconds: 1,
      failureThreshold: 3,
      successThreshold: 2,
    },
  });

  // Registered after passing; the endpoint failing from the start is judged and never registered.
  await eventually(
    'the three healthy endpoints in etcd and passing in Consul',
    async () => {
      const [inEtcd, passing] = await Promise.all([etcdPorts(etcd, dir), passingPorts(consulName)]);
      const want = sorted([a.port, b.port, c.port]);
      return JSON.stringify(inEtcd) === JSON.stringify(want) && JSON.stringify(passing) === JSON.stringify(want) ? true : undefined;
    },
    WAIT_MS,
  );
  const first = await eventually(
    'status.health to judge all four',
    async () => {
      const s = await statusOf(kc, ns, 'orders');
      return s.health?.healthy === 3 && s.health.unhealthy === 1 ? s : undefined;
    },
    WAIT_MS,
  );
  assert.deepEqual(
    first.health?.unhealthyEndpoints?.map((u) => [u.address, u.port]),
    [['127.0.0.1', d.port]],
  );
  assert.match(first.health?.unhealthyEndpoints?.[0]?.lastFailure ?? '', /redis/);
  assert.equal(condition(first.conditions, 'EndpointsHealthy')?.reason, 'SomeUnhealthy');
  assert.ok(!puts.some((k) => k.endsWith(`:${d.port}`)), 'an endpoint that never passed is never written to etcd');
  assert.ok(!(await consulInstances(consulName)).has(d.port), 'nor to Consul');

  // A dependency goes down on a: ejected after exactly failureThreshold failing answers.
  a.set('redis-down');
  await eventually('a to leave etcd', async () => ((await etcdPorts(etcd, dir)).includes(a.port) ? undefined : true), WAIT_MS);
  assert.ok(a.count('redis-down') >= 3, `ejected after ${a.count('redis-down')} failing probe(s); failureThreshold is 3`);
  t.diagnostic(`a left etcd after ${a.count('redis-down')} failing probe(s) (failureThreshold 3)`);
  const marked = await eventually(
    'a critical in Consul with the probe output',
    async () => {
      const instance = (await consulInstances(consulName)).get(a.port);
      return instance?.status === 'critical' ? instance : undefined;
    },
    WAIT_MS,
  );
  assert.match(marked.output, /redis/);
  assert.deepEqual(await passingPorts(consulName), sorted([b.port, c.port]), 'a is out of ?passing=true');
  const down = await eventually(
    'status to list a as unhealthy',
    async () => {
      const s = await statusOf(kc, ns, 'orders');
      return s.health?.unhealthy === 2 ? s : undefined;
    },
    WAIT_MS,
  );
  assert.deepEqual(
    down.health?.unhealthyEndpoints?.map((u) => u.port),
    sorted([a.port, d.port]),
  );
  await eventually('an EndpointUnhealthy event for a', async () =>
    (await eventsFor(kc, ns, 'orders')).find((e) => e.reason === 'EndpointUnhealthy' && e.message.includes(`:${a.port}`)),
  );

  // a recovers: back after successThreshold passing answers, passing in Consul again.
  a.set('ok');
  await eventually('a back in etcd', async () => ((await etcdPorts(etcd, dir)).includes(a.port) ? true : undefined), WAIT_MS);
  assert.ok(a.count('ok') >= 2, `re-admitted after ${a.count('ok')} passing probe(s); successThreshold is 2`);
  await eventually('a passing in Consul', async () => ((await passingPorts(consulName)).includes(a.port) ? true : undefined), WAIT_MS);

  // A probe that gets no answer within timeoutSeconds is a failure.
  c.set('hang');
  await eventually('c to leave etcd', async () => ((await etcdPorts(etcd, dir)).includes(c.port) ? undefined : true), WAIT_MS);
  const timedOut = await eventually(
    'c listed with a timeout',
    async () => {
      const s = await statusOf(kc, ns, 'orders');
      return s.health?.unhealthyEndpoints?.find((u) => u.port === c.port);
    },
    WAIT_MS,
  );
  assert.match(timedOut.lastFailure, /timed out/);
  assert.ok((await requireMetric(op, 'kube_registrar_health_probes_total', 'outcome="timeout"')) >= 3);

  // Every endpoint failing (a bad status counts too): panic mode keeps all of them registered.
  for (const s of [a, b]) s.set('status-503');
  const panic = await eventually(
    'panic mode',
    async () => {
      const s = await statusOf(kc, ns, 'orders');
      return s.health?.panic === true && s.health.unhealthy === 4 ? s : undefined;
    },
    WAIT_MS,
  );
  assert.equal(condition(panic.conditions, 'EndpointsHealthy')?.reason, 'PanicThreshold');
  assert.equal(condition(panic.conditions, 'EndpointsHealthy')?.status, 'False');
  assert.match(panic.health?.unhealthyEndpoints?.find((u) => u.port === a.port)?.lastFailure ?? '', /503/);
  await eventually(
    'all four in etcd and passing in Consul (fail open)',
    async () => {
      const want = JSON.stringify(sorted([a.port, b.port, c.port, d.port]));
      return JSON.stringify(await etcdPorts(etcd, dir)) === want && JSON.stringify(await passingPorts(consulName)) === want
        ? true
        : undefined;
    },
    WAIT_MS,
  );
  assert.equal(await requireMetric(op, 'kube_registrar_health_panic_service_instances'), 1);
  assert.equal(await requireMetric(op, 'kube_registrar_health_endpoints', 'state="unhealthy"'), 4);
  await eventually('a PanicThreshold event', async () => (await eventsFor(kc, ns, 'orders')).find((e) => e.reason === 'PanicThreshold'));

  // Out of panic: only the healthy ones stay.
  for (const s of [a, b, c]) s.set('ok');
  await eventually(
    'a, b and c only',
    async () => {
      const want = JSON.stringify(sorted([a.port, b.port, c.port]));
      return JSON.stringify(await etcdPorts(etcd, dir)) === want && JSON.stringify(await passingPorts(consulName)) === want
        ? true
        : undefined;
    },
    WAIT_MS,
  );
  assert.equal(await requireMetric(op, 'kube_registrar_health_panic_service_instances'), 0);

  // Without spec.healthCheck every endpoint is registered as written.
  await patchServiceInstance(kc, ns, 'orders', { healthCheck: null });
  await eventually(
    'd registered once the check is gone',
    async () =>
      JSON.stringify(await etcdPorts(etcd, dir)) === JSON.stringify(sorted([a.port, b.port, c.port, d.port])) ? true : undefined,
    WAIT_MS,
  );
  const plain = await eventually(
    'status.health and the condition gone',
    async () => {
      const s = await statusOf(kc, ns, 'orders');
      return s.health === undefined && !condition(s.conditions, 'EndpointsHealthy') ? s : undefined;
    },
    WAIT_MS,
  );
  assert.equal(condition(plain.conditions, 'Ready')?.status, 'True');
  assert.deepEqual(await passingPorts(consulName), sorted([a.port, b.port, c.port, d.port]));
  const probes = await requireMetric(op, 'kube_registrar_health_probes_total', 'outcome="success"');
  assert.ok(probes > 0);
  assert.equal(await metricValue(op, 'kube_registrar_health_endpoints', 'state="healthy"'), 0, 'nothing is probed any more');
});

test('TCP and gRPC health checks eject and re-admit endpoints', async () => {
  const kc = adminKubeConfig();
  const sfx = uniqueSuffix();
  const ns = `hc-${sfx}`;
  const { prefix } = await setUp(kc, ns, sfx);
  const [tcp1, tcp2] = await Promise.all([TcpHealthServer.start(), TcpHealthServer.start()]);
  const [grpc1, grpc2] = await Promise.all([GrpcHealthServer.start(), GrpcHealthServer.start()]);
  assert.ok(tcp1 && tcp2 && grpc1 && grpc2);
  servers.push(tcp1, tcp2, grpc1, grpc2);
  const op = await startOperator([`--watch-namespaces=${ns}`, '--resync-period=30']);
  operators.push(op);
  const timing = { intervalSeconds: 1, timeoutSeconds: 1, failureThreshold: 2, successThreshold: 1, panicThresholdPercent: 0 };
  await createServiceInstance(kc, ns, 'db', {
    service: 'db',
    endpoints: [tcp1, tcp2].map((s) => ({ address: '127.0.0.1', port: s.port })),
    healthCheck: { tcp: {}, ...timing },
  });
  await createServiceInstance(kc, ns, 'rpc', {
    service: 'rpc',
    endpoints: [grpc1, grpc2].map((s) => ({ address: '127.0.0.1', port: s.port })),
    healthCheck: { grpc: {}, ...timing },
  });
  const both = async (dir: string, ports: number[]): Promise<true | undefined> =>
    JSON.stringify(await etcdPorts(etcd, dir)) === JSON.stringify(sorted(ports)) ? true : undefined;
  const dbDir = `${prefix}/${ns}/db/`;
  const rpcDir = `${prefix}/${ns}/rpc/`;
  await eventually('both TCP endpoints registered', () => both(dbDir, [tcp1.port, tcp2.port]), WAIT_MS);
  await eventually('both gRPC endpoints registered', () => both(rpcDir, [grpc1.port, grpc2.port]), WAIT_MS);

  await tcp1.close();
  grpc1.serving = false;
  await eventually('the closed TCP endpoint ejected', () => both(dbDir, [tcp2.port]), WAIT_MS);
  await eventually('the NOT_SERVING gRPC endpoint ejected', () => both(rpcDir, [grpc2.port]), WAIT_MS);
  const rpc = await eventually('rpc status', async () => (await statusOf(kc, ns, 'rpc')).health?.unhealthyEndpoints?.[0], WAIT_MS);
  assert.match(rpc.lastFailure, /NOT_SERVING/);
  const db = await eventually('db status', async () => (await statusOf(kc, ns, 'db')).health?.unhealthyEndpoints?.[0], WAIT_MS);
  assert.match(db.lastFailure, /ECONNREFUSED/);

  await tcp1.open();
  grpc1.serving = true;
  await eventually('the TCP endpoint back', () => both(dbDir, [tcp1.port, tcp2.port]), WAIT_MS);
  await eventually('the gRPC endpoint back', () => both(rpcDir, [grpc1.port, grpc2.port]), WAIT_MS);
});

test('a failover keeps what is registered: the new leader neither empties nor refills the registry while it warms up, and only the leader probes', async (t) => {
  const kc = adminKubeConfig();
  const sfx = uniqueSuffix();
  const ns = `hc-${sfx}`;
  const { prefix } = await setUp(kc, ns, sfx);
  const servers3 = await Promise.all([HttpHealthServer.start(), HttpHealthServer.start(), HttpHealthServer.start()]);
  const [a, b, c] = servers3;
  assert.ok(a && b && c);
  servers.push(a, b, c);
  const flags = [
    '--leader-elect=true',
    `--leader-election-namespace=${ns}`,
    `--watch-namespaces=${ns}`,
    '--lease-duration=4',
    '--renew-deadline=3',
    '--retry-period=1',
    '--resync-period=30',
  ];
  const pair = [await startOperator(flags), await startOperator(flags)];
  operators.push(...pair);
  await createServiceInstance(kc, ns, 'pay', {
    service: 'pay',
    endpoints: [a, b, c].map((s) => ({ address: '127.0.0.1', port: s.port })),
    healthCheck: { http: { path: '/healthz' }, intervalSeconds: 1, timeoutSeconds: 1, failureThreshold: 1 },
  });
  const dir = `${prefix}/${ns}/pay/`;
  const consulName = `${ns}-pay`;
  await eventually('a, b and c registered', async () => ((await etcdPorts(etcd, dir)).length === 3 ? true : undefined), 90_000);
  c.set('status-503');
  await eventually(
    'c out of etcd and critical in Consul',
    async () =>
      !(await etcdPorts(etcd, dir)).includes(c.port) && (await consulInstances(consulName)).get(c.port)?.status === 'critical'
        ? true
        : undefined,
    90_000,
  );

  const leaderOf = async (): Promise<number[]> =>
    Promise.all(pair.map(async (op) => (await metricValue(op, 'kube_registrar_leader').catch(() => undefined)) ?? 0));
  const roles = await eventually('one leader', async () => {
    const r = await leaderOf();
    return r.filter((v) => v === 1).length === 1 ? r : undefined;
  });
  const leader = pair[roles.indexOf(1)];
  const standby = pair[roles.indexOf(0)];
  assert.ok(leader && standby);
  assert.ok((await requireMetric(leader, 'kube_registrar_health_probes_total', 'outcome="success"')) > 0, 'the leader probes');
  assert.equal(await metricValue(standby, 'kube_registrar_health_probes_total', 'outcome="success"'), undefined, 'the standby does not');

  // A long interval from now on: a new leader's first probes are spread over 60 s, so its warm-up
  // is long enough to watch. (The changed check also makes the current leader judge afresh.)
  await patchServiceInstance(kc, ns, 'pay', { healthCheck: { intervalSeconds: 60 } });
  await eventually('the leader to take the new interval', async () =>
    ((await metricValue(leader, 'kube_registrar_health_endpoints', 'state="unknown"')) ?? 0) > 0 ? true : undefined,
  );
  const deletes: string[] = [];
  const puts: string[] = [];
  const watcher = await etcd.watch().prefix(dir).create();
  watcher.on('delete', (kv) => deletes.push(kv.key.toString()));
  watcher.on('put', (kv) => puts.push(kv.key.toString()));
  t.after(() => watcher.cancel());
  await leader.process.kill();
  await eventually(
    'the standby to lead',
    async () => ((await metricValue(standby, 'kube_registrar_leader')) === 1 ? true : undefined),
    30_000,
  );
  // A reconcile that schedules its next resync counts as `requeue`.
  await eventually('the new leader to reconcile', async () =>
    ((await metricValue(standby, 'kube_registrar_reconcile_total', 'outcome="requeue"')) ?? 0) +
      ((await metricValue(standby, 'kube_registrar_reconcile_total', 'outcome="success"')) ?? 0) >
    0
      ? true
      : undefined,
  );
  await sleep(2000);
  const warmingUp = await requireMetric(standby, 'kube_registrar_health_endpoints', 'state="unknown"');
  t.diagnostic(`endpoints not yet probed by the new leader 2 s after its first reconcile: ${warmingUp} of 3`);
  assert.ok(warmingUp >= 1, 'the new leader reconciled while some endpoints were still unprobed');
  assert.deepEqual(deletes, [], 'nothing was deleted while the new leader warmed up');
  assert.ok(!puts.some((k) => k.endsWith(`:${c.port}`)), 'the ejected endpoint was not brought back');
  assert.equal((await consulInstances(consulName)).get(c.port)?.status, 'critical', 'the Consul mark stays');
  assert.deepEqual(await etcdPorts(etcd, dir), sorted([a.port, b.port]));

  // Then its own probes decide.
  await eventually(
    'the new leader to probe',
    async () => {
      let sum = 0;
      for (const outcome of ['success', 'failure', 'timeout'])
        sum += (await metricValue(standby, 'kube_registrar_health_probes_total', `outcome="${outcome}"`)) ?? 0;
      return sum > 0 ? true : undefined;
    },
    90_000,
  );
});
