/**
 * The Consul backend against a real Consul agent (CONSUL_HTTP_ADDR, and CONSUL_HTTP_TOKEN when the
 * bed's agent has ACLs; both set by the test bed). Every test uses its own cluster id and service
 * names, so tests share one agent and run in any order. The ACL test starts its own ACL-enabled
 * agent.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { createServer } from 'node:http';
import type { IncomingHttpHeaders } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';

import { calculatePlan, isEmptyPlan } from '../../src/plan/plan.ts';
import { ConsulRegistry } from '../../src/registry/consul/consul-registry.ts';
import type { ConsulRegistryOptions } from '../../src/registry/consul/consul-registry.ts';
import { silentLogger } from '../../src/registry/logger.ts';
import { OwnedRegistry } from '../../src/registry/owner.ts';
import type { ForeignEntryConflict } from '../../src/registry/owner.ts';
import type { Owner, RegistryEntry } from '../../src/registry/types.ts';
import { freePort } from '../../testbed/processes.ts';
import { startAclConsulAgent } from '../support/consul-acl.ts';
import type { AclConsulAgent } from '../support/consul-acl.ts';
import { consulAgentEnv } from '../support/env.ts';
import { reconcileOnce } from '../support/reconcile.ts';

const { address: AGENT, token: TOKEN } = consulAgentEnv();

const TTL = 5;
const registries: ConsulRegistry[] = [];
after(async () => {
  await Promise.all(registries.map((r) => r.close()));
});

function suffix(): string {
  return randomUUID().slice(0, 8);
}

function registry(options: Partial<ConsulRegistryOptions> & { clusterId: string }): ConsulRegistry {
  const r = new ConsulRegistry({
    address: AGENT,
    ...(TOKEN !== undefined ? { token: TOKEN } : {}),
    serviceNameTemplate: '{namespace}-{service}',
    leaseTtlSeconds: TTL,
    callTimeoutMs: 5000,
    ...options,
  });
  registries.push(r);
  return r;
}

interface Fixture {
  readonly clusterId: string;
  readonly ns: string;
  readonly service: string;
  /** Consul name under the `{namespace}-{service}` template. */
  readonly name: string;
  readonly owner: Owner;
}

function fixture(): Fixture {
  const s = suffix();
  const ns = `ns${s}`;
  const service = `user-${s}`;
  const clusterId = `c-${randomUUID()}`;
  return { clusterId, ns, service, name: `${ns}-${service}`, owner: { clusterId, namespace: 'prod', name: service } };
}

function entry(f: Fixture, address: string, extra: { weight?: number; tags?: Record<string, string>; owner?: Owner } = {}): RegistryEntry {
  const owner = extra.owner ?? f.owner;
  return {
    registryNamespace: f.ns,
    k8sNamespace: owner.namespace,
    owner,
    endpoint: {
      service: f.service,
      instanceId: `${address}:8080`,
      address,
      port: 8080,
      weight: extra.weight ?? 2,
      tags: extra.tags ?? { version: '1.0', zone: 'a' },
      metadata: { team: 'core' },
      source: `pod/prod/user-${address}`,
    },
  };
}

/** One reconcile as the controller does it: owned records → plan → apply. */
async function sync(
  backend: ConsulRegistry,
  f: Fixture,
  desired: RegistryEntry[],
  owner: Owner = f.owner,
): Promise<readonly ForeignEntryConflict[]> {
  return reconcileOnce(backend, owner, { registryNamespace: f.ns, service: f.service }, desired);
}

async function consul<T>(path: string, init: RequestInit = {}, agent = AGENT, token = TOKEN): Promise<T> {
  const headers: Record<string, string> = token !== undefined ? { 'X-Consul-Token': token } : {};
  const res = await fetch(`${agent}${path}`, { ...init, headers, signal: AbortSignal.timeout(10_000) });
  const text = await res.text();
  if (!res.ok) throw new Error(`${init.method ?? 'GET'} ${path}: ${res.status} ${text}`);
  return (text === '' ? undefined : JSON.parse(text)) as T;
}

interface HealthEntry {
  readonly Service: {
    ID: string;
    Service: string;
    Address: string;
    Port: number;
    Tags: string[];
    Meta: Record<string, string>;
    Weights: { Passing: number; Warning: number };
    ModifyIndex: number;
  };
  readonly Checks: { CheckID: string; Status: string; ModifyIndex: number }[];
}

function passing(name: string, agent = AGENT, token = TOKEN): Promise<HealthEntry[]> {
  return consul<HealthEntry[]>(`/v1/health/service/${encodeURIComponent(name)}?passing=true`, {}, agent, token);
}

function everything(name: string): Promise<HealthEntry[]> {
  return consul<HealthEntry[]>(`/v1/health/service/${encodeURIComponent(name)}`);
}

function view(entries: readonly HealthEntry[]): { address: string; port: number; weight: number; tags: string[] }[] {
  return entries
    .map((e) => ({ address: e.Service.Address, port: e.Service.Port, weight: e.Service.Weights.Passing, tags: e.Service.Tags }))
    .sort((a, b) => (a.address < b.address ? -1 : 1));
}

async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs: number): Promise<number> {
  const started = Date.now();
  while (!(await check())) {
    if (Date.now() - started > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(200);
  }
  return Date.now() - started;
}

/** What the catalog shows of a service and its checks: changes whenever anything about them is written. */
async function fingerprint(name: string): Promise<string> {
  const all = await everything(name);
  return JSON.stringify(
    all
      .map((e) => [
        e.Service.ID,
        e.Service.ModifyIndex,
        e.Checks.filter((c) => c.CheckID !== 'serfHealth').map((c) => [c.CheckID, c.Status, c.ModifyIndex]),
      ])
      .sort(),
  );
}

void describe('ConsulRegistry against a real Consul agent', () => {
  void it('?passing=true returns exactly the ready endpoints with their weights and tags', async () => {
    const f = fixture();
    const backend = registry({ clusterId: f.clusterId });
    const a = entry(f, '10.1.0.1', { weight: 1 });
    const b = entry(f, '10.1.0.2', { weight: 5, tags: { zone: 'b' } });
    const c = entry(f, '10.1.0.3', { weight: 3 });
    assert.deepEqual(await sync(backend, f, [a, b, c]), []);
    await waitFor('three passing instances', async () => (await passing(f.name)).length === 3, 10_000);
    assert.deepEqual(view(await passing(f.name)), [
      { address: '10.1.0.1', port: 8080, weight: 1, tags: ['version=1.0', 'zone=a'] },
      { address: '10.1.0.2', port: 8080, weight: 5, tags: ['zone=b'] },
      { address: '10.1.0.3', port: 8080, weight: 3, tags: ['version=1.0', 'zone=a'] },
    ]);
    const meta = (await passing(f.name)).find((e) => e.Service.Address === '10.1.0.2')?.Service.Meta ?? {};
    assert.equal(meta['kr-owner-cluster'], f.clusterId);
    assert.equal(meta['kr-owner-namespace'], 'prod');
    assert.equal(meta['kr-owner-name'], f.service);
    assert.equal(meta['kr-k8s-namespace'], 'prod');
    assert.equal(meta['kr-source'], 'pod/prod/user-10.1.0.2');
    assert.equal(meta['kr-tags'], '{"zone":"b"}');
    assert.equal(meta['team'], 'core');

    // b stops being ready, a changes weight.
    const a2 = entry(f, '10.1.0.1', { weight: 4 });
    await sync(backend, f, [a2, c]);
    await waitFor(
      'the new state in the catalog',
      async () => JSON.stringify(view(await passing(f.name)).map((e) => [e.address, e.weight])) === '[["10.1.0.1",4],["10.1.0.3",3]]',
      10_000,
    );
    assert.equal((await everything(f.name)).length, 2, 'the endpoint that stopped being ready is deregistered, not just failing');
    assert.equal(backend.leaseIdFor(f.ns)?.endsWith(':ttl'), true);
  });

  void it('reads back what it wrote as the same entries, so a second reconcile writes nothing', async () => {
    const f = fixture();
    const backend = registry({ clusterId: f.clusterId });
    const desired = [
      entry(f, '10.2.0.1'),
      entry(f, 'fd00::21'),
      entry(f, 'vm-1.example.com', { tags: { 'app.kubernetes.io/name': 'ü=x' } }),
      entry(f, '10.2.0.4', { weight: 0 }),
    ];
    await sync(backend, f, desired);
    const current = await new OwnedRegistry(backend, f.owner).records({ registryNamespace: f.ns, service: f.service });
    assert.equal(
      current.some((e) => e.needsRewrite === true),
      false,
    );
    assert.ok(isEmptyPlan(calculatePlan({ current, desired, owner: f.owner, policy: 'sync' })));
  });

  void it('a weight-0 endpoint is registered but kept out of ?passing=true results', async () => {
    const f = fixture();
    const backend = registry({ clusterId: f.clusterId });
    await sync(backend, f, [entry(f, '10.3.0.1'), entry(f, '10.3.0.2', { weight: 0 })]);
    await waitFor('one passing instance', async () => (await passing(f.name)).length === 1, 10_000);
    assert.deepEqual(
      view(await passing(f.name)).map((e) => e.address),
      ['10.3.0.1'],
    );
    assert.equal((await everything(f.name)).length, 2);
    // Raising the weight puts it back into rotation.
    await sync(backend, f, [entry(f, '10.3.0.1'), entry(f, '10.3.0.2', { weight: 2 })]);
    await waitFor('two passing instances', async () => (await passing(f.name)).length === 2, 10_000);
  });

  void it('a restarted operator adopts the heartbeat: no instance is deregistered or turns critical, and nothing is rewritten', async () => {
    const f = fixture();
    const first = registry({ clusterId: f.clusterId });
    const desired = [entry(f, '10.4.0.1'), entry(f, '10.4.0.2')];
    await sync(first, f, desired);
    await waitFor('two passing instances', async () => (await passing(f.name)).length === 2, 10_000);
    const before = await fingerprint(f.name);
    const leaseId = first.leaseIdFor(f.ns);

    await first.close();
    const second = registry({ clusterId: f.clusterId });
    assert.ok((await second.adoptLeases()).includes(f.ns), 'the heartbeat of the namespace is adopted at startup');
    assert.deepEqual(await sync(second, f, desired), []);
    // Longer than the TTL: only the new process keeps the heartbeat passing now.
    await sleep((TTL + 2) * 1000);
    assert.equal((await passing(f.name)).length, 2);
    assert.equal(await fingerprint(f.name), before, 'no service or check was written and no check changed status');
    assert.equal(second.leaseIdFor(f.ns), leaseId, 'the same heartbeat check, not a new one');
  });

  void it("at startup a backend adopts its own Registry's heartbeats, not those another Registry of the same cluster keeps on the same agent", async () => {
    const f = fixture();
    const mine = registry({ clusterId: f.clusterId, registryName: 'mine' });
    await sync(mine, f, [entry(f, '10.4.9.1')]);
    const leaseId = mine.leaseIdFor(f.ns);
    assert.ok(leaseId !== undefined, 'the heartbeat was registered');
    const before = await fingerprint(f.name);
    const other = registry({ clusterId: f.clusterId, registryName: 'other', leaseTtlSeconds: TTL * 2 });
    assert.deepEqual(await other.adoptLeases(), [], "the other Registry's backend leaves the heartbeat alone");
    assert.equal(other.keepalives(), 0);
    await mine.close();
    const restarted = registry({ clusterId: f.clusterId, registryName: 'mine' });
    assert.deepEqual(await restarted.adoptLeases(), [f.ns], 'its own Registry adopts it');
    assert.equal(restarted.leaseIdFor(f.ns), leaseId);
    assert.equal(await fingerprint(f.name), before, 'nothing was re-registered');
  });

  void it('a restarted backend whose first reads come all at once adopts the heartbeat once, not once per read', async () => {
    const f = fixture();
    const first = registry({ clusterId: f.clusterId });
    await sync(first, f, [entry(f, '10.4.8.1')]);
    const leaseId = first.leaseIdFor(f.ns);
    await first.close();
    const adopted: object[] = [];
    const logger = { ...silentLogger, info: (obj: object, msg?: string) => void (msg === 'adopted Consul heartbeat' && adopted.push(obj)) };
    const restarted = registry({ clusterId: f.clusterId, logger });
    // As after a start: every ServiceInstance of the namespace reads its scope before any heartbeat is known.
    const reads = await Promise.all(Array.from({ length: 8 }, () => restarted.records({ registryNamespace: f.ns, service: f.service })));
    assert.ok(
      reads.every((r) => r.length === 1),
      'every read found the instance',
    );
    assert.equal(restarted.leaseIdFor(f.ns), leaseId, 'the heartbeat was adopted');
    assert.equal(adopted.length, 1, 'one adoption (one TTL pass) for the eight reads');
    assert.equal(restarted.keepalives(), 1);
  });

  void it('when the operator is gone, instances leave ?passing=true within the TTL and are deregistered later', async () => {
    const f = fixture();
    const backend = registry({ clusterId: f.clusterId });
    await sync(backend, f, [entry(f, '10.5.0.1'), entry(f, '10.5.0.2')]);
    await waitFor('two passing instances', async () => (await passing(f.name)).length === 2, 10_000);

    // A killed operator: nothing deregistered, nobody passes the heartbeat any more.
    await backend.close();
    await waitFor('no passing instance', async () => (await passing(f.name)).length === 0, TTL * 1000 + 3000);
    assert.equal((await everything(f.name)).length, 2, 'still registered, only critical, until DeregisterCriticalServiceAfter');
    // Default reap delay is Consul's minimum of 60 s; the agent reaps every 30 s.
    await waitFor('the agent to reap the instances', async () => (await everything(f.name)).length === 0, (TTL + 60 + 30 + 15) * 1000);
  });

  void it('a foreign service under the same name is reported on collision and never touched', async () => {
    const f = fixture();
    const backend = registry({ clusterId: f.clusterId });
    const foreignIds = [`foreign-${suffix()}`, `foreign-${suffix()}`];
    await consul('/v1/agent/service/register', {
      method: 'PUT',
      body: JSON.stringify({ ID: foreignIds[0], Name: f.name, Address: '10.6.0.9', Port: 80, Tags: ['vm'] }),
    });
    await consul('/v1/agent/service/register', {
      method: 'PUT',
      body: JSON.stringify({ ID: foreignIds[1], Name: f.name, Address: '10.6.0.2', Port: 8080, Meta: { team: 'ops' } }),
    });
    const hashes = async (): Promise<string[]> =>
      Promise.all(foreignIds.map(async (id) => (await consul<{ ContentHash: string }>(`/v1/agent/service/${id}`)).ContentHash));
    const before = await hashes();
    try {
      const conflicts = await sync(backend, f, [entry(f, '10.6.0.1'), entry(f, '10.6.0.2')]);
      assert.deepEqual(
        conflicts.map((c) => [c.operation, c.entry.endpoint.instanceId]),
        [['create', '10.6.0.2:8080']],
      );
      assert.match(conflicts[0]?.message ?? '', /carries no kube-registrar owner/);
      await sync(backend, f, []);
      assert.deepEqual(await hashes(), before);
      assert.deepEqual((await everything(f.name)).map((e) => e.Service.ID).sort(), [...foreignIds].sort());
    } finally {
      for (const id of foreignIds) await consul(`/v1/agent/service/deregister/${id}`, { method: 'PUT' });
    }
  });

  void it("another cluster's services are never touched, even for the same endpoint", async () => {
    const f = fixture();
    const mine = registry({ clusterId: f.clusterId });
    const otherOwner: Owner = { clusterId: `c-${randomUUID()}`, namespace: 'prod', name: f.service };
    const theirs = registry({ clusterId: otherOwner.clusterId });
    await sync(mine, f, [entry(f, '10.7.0.1')]);
    const conflicts = await sync(
      theirs,
      f,
      [entry(f, '10.7.0.1', { owner: otherOwner }), entry(f, '10.7.0.2', { owner: otherOwner })],
      otherOwner,
    );
    assert.deepEqual(
      conflicts.map((c) => c.entry.endpoint.instanceId),
      ['10.7.0.1:8080'],
    );
    await sync(theirs, f, [], otherOwner);
    await waitFor(
      'only our instance left',
      async () =>
        JSON.stringify((await everything(f.name)).map((e) => e.Service.Meta['kr-owner-cluster'])) === JSON.stringify([f.clusterId]),
      10_000,
    );
  });

  void it('an owned service deleted or edited by hand is repaired by the first reconcile after the view of the agent is refreshed', async () => {
    const f = fixture();
    const backend = registry({ clusterId: f.clusterId, viewRefreshSeconds: 1 });
    const desired = [entry(f, '10.8.0.1'), entry(f, '10.8.0.2')];
    await sync(backend, f, desired);
    const [one, two] = (await everything(f.name)).map((e) => e.Service).sort((a, b) => (a.Address < b.Address ? -1 : 1));
    assert.ok(one !== undefined && two !== undefined);
    await consul(`/v1/agent/service/deregister/${encodeURIComponent(one.ID)}`, { method: 'PUT' });
    // Re-registered by hand without its alias check and with another weight: it would never expire.
    await consul('/v1/agent/service/register?replace-existing-checks=true', {
      method: 'PUT',
      body: JSON.stringify({
        ID: two.ID,
        Name: f.name,
        Address: two.Address,
        Port: two.Port,
        Tags: two.Tags,
        Meta: two.Meta,
        Weights: { Passing: 9, Warning: 1 },
      }),
    });

    // Reconciles read a copy of the agent that is read again in bulk once older than a second.
    await waitFor(
      'both repaired',
      async () => {
        await sync(backend, f, desired);
        return JSON.stringify(view(await passing(f.name)).map((e) => e.weight)) === '[2,2]';
      },
      20_000,
    );
    const checks = await consul<Record<string, { Type: string; ServiceID: string }>>(
      `/v1/agent/checks?filter=${encodeURIComponent(`ServiceName == "${f.name}"`)}`,
    );
    assert.deepEqual(
      Object.values(checks).map((c) => c.Type),
      ['alias', 'alias'],
    );
  });

  void it('reconciles read the agent in bulk once per refresh period, and a foreign service registered meanwhile is reported once read', async () => {
    const f = fixture();
    const backend = registry({ clusterId: f.clusterId, viewRefreshSeconds: 2 });
    await sync(backend, f, [entry(f, '10.12.0.1')]);
    const readsAfterFirst = backend.bulkReads;
    await sync(backend, f, [entry(f, '10.12.0.1'), entry(f, '10.12.0.3')]);
    await sync(backend, f, [entry(f, '10.12.0.3')]);
    assert.equal(backend.bulkReads, readsAfterFirst, 'reconciles within the refresh period read no more than the first did');
    assert.deepEqual(
      view(await passing(f.name)).map((e) => e.address),
      ['10.12.0.3'],
    );

    const foreignId = `foreign-${suffix()}`;
    await consul('/v1/agent/service/register', {
      method: 'PUT',
      body: JSON.stringify({ ID: foreignId, Name: f.name, Address: '10.12.0.2', Port: 8080 }),
    });
    const hash = async (): Promise<string> => (await consul<{ ContentHash: string }>(`/v1/agent/service/${foreignId}`)).ContentHash;
    const before = await hash();
    const readsAtForeign = backend.bulkReads;
    try {
      // Bulk reads run one at a time: the second to end after the registration began after it.
      await waitFor(
        'a bulk read begun after the foreign registration',
        async () => {
          await sync(backend, f, [entry(f, '10.12.0.3')]);
          return backend.bulkReads >= readsAtForeign + 2;
        },
        20_000,
      );
      const conflicts = await sync(backend, f, [entry(f, '10.12.0.2'), entry(f, '10.12.0.3')]);
      assert.deepEqual(
        conflicts.map((c) => [c.operation, c.entry.endpoint.instanceId]),
        [['create', '10.12.0.2:8080']],
      );
      assert.equal(await hash(), before);
    } finally {
      await consul(`/v1/agent/service/deregister/${foreignId}`, { method: 'PUT' });
    }
  });

  void it('a heartbeat deregistered by hand is registered again on the next interval and its instances recover', async () => {
    const f = fixture();
    const backend = registry({ clusterId: f.clusterId });
    await sync(backend, f, [entry(f, '10.11.0.1'), entry(f, '10.11.0.2')]);
    await waitFor('two passing instances', async () => (await passing(f.name)).length === 2, 10_000);
    const heartbeatId = (backend.leaseIdFor(f.ns) ?? '').replace(/:ttl$/, '');
    await consul(`/v1/agent/service/deregister/${encodeURIComponent(heartbeatId)}`, { method: 'PUT' });
    await waitFor(
      'the heartbeat back on the agent',
      async () => (await everything(`${f.ns}-kube-registrar-heartbeat`)).length === 1,
      TTL * 1000,
    );
    await waitFor('two passing instances again', async () => (await passing(f.name)).length === 2, TTL * 1000);
    assert.equal((await everything(f.name)).length, 2);
  });

  void it('a changed serviceName template renames the services instead of orphaning them', async () => {
    const f = fixture();
    const old = registry({ clusterId: f.clusterId, serviceNameTemplate: 'old-{namespace}-{service}' });
    await sync(old, f, [entry(f, '10.9.0.1')]);
    assert.equal((await everything(`old-${f.name}`)).length, 1);
    await old.close();
    const renamed = registry({ clusterId: f.clusterId });
    await renamed.adoptLeases();
    await sync(renamed, f, [entry(f, '10.9.0.1')]);
    await waitFor(
      'the service under its new name only',
      async () => (await everything(`old-${f.name}`)).length === 0 && (await passing(f.name)).length === 1,
      10_000,
    );
  });

  void it('a dry run reads and logs but registers nothing, not even a heartbeat', async () => {
    const f = fixture();
    const logged: string[] = [];
    const log = (_o: object, msg?: string): void => void logged.push(msg ?? '');
    const backend = registry({ clusterId: f.clusterId, dryRun: true, logger: { debug: log, info: log, warn: log, error: log } });
    await sync(backend, f, [entry(f, '10.10.0.1')]);
    assert.equal((await everything(f.name)).length, 0);
    assert.equal((await everything(`${f.ns}-kube-registrar-heartbeat`)).length, 0);
    assert.ok(logged.includes('dry run: Consul registration skipped'));
  });

  void it('an agent in another datacenter than configured is refused with a message that says what to fix', async () => {
    const f = fixture();
    const backend = registry({ clusterId: f.clusterId, datacenter: 'elsewhere' });
    await assert.rejects(backend.records({ registryNamespace: f.ns, service: f.service }), /spec\.consul\.datacenter says "elsewhere"/);
  });

  void it('a Consul namespace on open-source Consul is refused with a message that points to the serviceName template', async () => {
    const f = fixture();
    const backend = registry({ clusterId: f.clusterId, namespaceTemplate: '{namespace}' });
    await assert.rejects(backend.records({ registryNamespace: f.ns, service: f.service }), /open-source Consul.*spec\.consul\.serviceName/);
  });

  void it('an agent that does not answer fails the call within its timeout, with the address in the message', async () => {
    const port = await freePort();
    const backend = registry({ clusterId: 'c-unreachable', address: `http://127.0.0.1:${port}`, callTimeoutMs: 500 });
    await assert.rejects(
      backend.records({ registryNamespace: 'prod', service: 'user' }),
      new RegExp(`got no answer.*127\\.0\\.0\\.1:${port}`),
    );
  });
});

void describe('ConsulRegistry with ACLs', () => {
  let acl: AclConsulAgent;
  before(async () => {
    acl = await startAclConsulAgent();
  });
  after(async () => {
    await acl.stop();
  });

  void it("a token limited to dev's service prefix registers dev's services but cannot write prod's, and says why", async () => {
    const s = suffix();
    const token = await acl.createToken(`service_prefix "dev${s}-" { policy = "write" }`);
    const clusterId = `c-${randomUUID()}`;
    const backend = new ConsulRegistry({
      address: acl.address,
      token,
      clusterId,
      serviceNameTemplate: '{namespace}-{service}',
      leaseTtlSeconds: TTL,
    });
    registries.push(backend);
    const dev: Fixture = {
      clusterId,
      ns: `dev${s}`,
      service: 'user',
      name: `dev${s}-user`,
      owner: { clusterId, namespace: 'dev', name: 'user' },
    };
    const prod: Fixture = { ...dev, ns: `prod${s}`, name: `prod${s}-user`, owner: { clusterId, namespace: 'prod', name: 'user' } };

    await sync(backend, dev, [entry(dev, '10.20.0.1')]);
    await waitFor("dev's instance passing", async () => (await passing(dev.name, acl.address, acl.managementToken)).length === 1, 10_000);

    await assert.rejects(sync(backend, prod, [entry(prod, '10.20.0.2')]), (err: unknown) => {
      assert.ok(err instanceof Error);
      assert.match(err.message, /Permission denied/);
      assert.match(err.message, new RegExp(`lacks permission 'service:write' on "prod${s}-`));
      assert.match(err.message, /spec\.consul\.tokenSecretRef/);
      return true;
    });
    const prodServices = await consul<Record<string, unknown>>(
      `/v1/agent/services?filter=${encodeURIComponent(`Service contains "prod${s}"`)}`,
      {},
      acl.address,
      acl.managementToken,
    );
    assert.deepEqual(Object.keys(prodServices), []);
  });
});

/** Forwards requests to the agent and counts them by endpoint: how many calls the backend really makes. */
async function countingProxy(target: string): Promise<{ address: string; counts: Map<string, number>; close(): Promise<void> }> {
  const counts = new Map<string, number>();
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const url = new URL(req.url ?? '/', target);
      const key = `${req.method ?? ''} ${url.pathname.replace(/^(\/v1\/agent\/(?:check\/pass|service\/deregister))\/.*$/, '$1/:id')}`;
      counts.set(key, (counts.get(key) ?? 0) + 1);
      const h: IncomingHttpHeaders = req.headers;
      const headers: Record<string, string> = {};
      for (const name of ['x-consul-token', 'content-type']) {
        const v = h[name];
        if (typeof v === 'string') headers[name] = v;
      }
      fetch(url, {
        method: req.method ?? 'GET',
        headers,
        ...(chunks.length > 0 ? { body: Buffer.concat(chunks) } : {}),
        signal: AbortSignal.timeout(30_000),
      }).then(
        async (up) => {
          res.writeHead(up.status, { 'content-type': up.headers.get('content-type') ?? 'text/plain' });
          res.end(Buffer.from(await up.arrayBuffer()));
        },
        (err: unknown) => {
          res.writeHead(502);
          res.end(String(err));
        },
      );
    });
  });
  const port = await freePort();
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  return {
    address: `http://127.0.0.1:${port}`,
    counts,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

function total(counts: ReadonlyMap<string, number>): number {
  return [...counts.values()].reduce((a, b) => a + b, 0);
}

void describe('ConsulRegistry heartbeat cost', () => {
  // Speed is not asserted; the figures are printed for BENCHMARKS.md. What is asserted is the
  // behaviour users rely on: the steady-state cost does not depend on the number of instances.
  void it('calls per heartbeat interval: one per registry namespace at 1,000 instances', async () => {
    const proxy = await countingProxy(AGENT);
    const ttl = 6;
    const intervals = 5;
    const f = fixture();
    const backend = registry({ clusterId: f.clusterId, address: proxy.address, leaseTtlSeconds: ttl });
    try {
      const desired = Array.from({ length: 1000 }, (_, i) => entry(f, `10.100.${Math.floor(i / 250)}.${(i % 250) + 1}`));
      let started = Date.now();
      await sync(backend, f, desired);
      const registerMs = Date.now() - started;
      const registerCalls = total(proxy.counts);
      await waitFor('1,000 passing instances', async () => (await passing(f.name)).length === 1000, 60_000);

      proxy.counts.clear();
      await sleep((intervals * (ttl * 1000)) / 3);
      const idle = new Map(proxy.counts);
      assert.deepEqual([...idle.keys()], ['PUT /v1/agent/check/pass/:id'], 'an idle interval makes no call but the heartbeat pass');
      const passes = idle.get('PUT /v1/agent/check/pass/:id') ?? 0;
      assert.ok(passes >= intervals - 1 && passes <= intervals + 1, `one pass per interval, got ${passes} in ${intervals} intervals`);

      proxy.counts.clear();
      started = Date.now();
      await sync(
        backend,
        f,
        desired.map((e, i) => (i < 100 ? { ...e, endpoint: { ...e.endpoint, weight: 7 } } : e)),
      );
      const churnMs = Date.now() - started;
      const churn = new Map(proxy.counts);

      proxy.counts.clear();
      started = Date.now();
      await sync(backend, f, []);
      const removeMs = Date.now() - started;
      const remove = new Map(proxy.counts);

      console.log(
        `consul heartbeat cost: ${passes} calls in ${intervals} intervals of ${(ttl * 1000) / 3} ms at 1,000 instances in 1 registry namespace ` +
          `(${(passes / intervals).toFixed(2)} per interval); initial registration ${registerCalls} calls in ${registerMs} ms; ` +
          `100 weight changes ${total(churn)} calls in ${churnMs} ms (${JSON.stringify(Object.fromEntries(churn))}); ` +
          `removing 1,000 ${total(remove)} calls in ${removeMs} ms`,
      );
    } finally {
      await backend.close();
      await proxy.close();
    }
  });
});
