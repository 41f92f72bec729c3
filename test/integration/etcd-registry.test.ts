/**
 * The etcd backend against a real etcd (ETCD_ENDPOINTS, comma-separated; set by the test bed).
 * Every test works under its own random prefix so tests can share one etcd and run in any order.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, describe, it } from 'node:test';

import { Etcd3 } from 'etcd3';
import type { IKeyValue } from 'etcd3';

import { calculatePlan } from '../../src/plan/plan.ts';
import type { Policy } from '../../src/plan/plan.ts';
import type { EtcdClient } from '../../src/registry/etcd/client.ts';
import { EtcdEntryChangedError, EtcdRegistry } from '../../src/registry/etcd/etcd-registry.ts';
import type { EtcdRegistryOptions } from '../../src/registry/etcd/etcd-registry.ts';
import { OwnedRegistry } from '../../src/registry/owner.ts';
import type { ForeignEntryConflict } from '../../src/registry/owner.ts';
import type { Changes, Owner, RegistryEntry } from '../../src/registry/types.ts';
import { TcpProxy } from '../support/faults.ts';
import { reconcileOnce } from '../support/reconcile.ts';

const endpoints = (process.env.ETCD_ENDPOINTS ?? '')
  .split(',')
  .map((e) => e.trim())
  .filter((e) => e !== '');
if (endpoints.length === 0) {
  throw new Error(
    'ETCD_ENDPOINTS is not set: the etcd integration tests need a real etcd. Run them through the test bed, ' +
      'or start etcd yourself and run e.g. ETCD_ENDPOINTS=http://127.0.0.1:2379 npx node --test test/integration/etcd-registry.test.ts',
  );
}

const etcd = new Etcd3({ hosts: endpoints });
const registries: EtcdRegistry[] = [];
after(async () => {
  await Promise.all(registries.map((r) => r.close()));
  etcd.close();
});

const NS = 'prod';
const SERVICE = 'user-service';

function freshPrefix(): string {
  return `/kr-test-${randomUUID()}`;
}

function ownerIn(clusterId: string, name = SERVICE): Owner {
  return { clusterId, namespace: 'prod', name };
}

function entry(owner: Owner, address: string, port = 8080, extra: { weight?: number; service?: string } = {}): RegistryEntry {
  const host = address.includes(':') ? `[${address}]` : address;
  return {
    registryNamespace: NS,
    k8sNamespace: owner.namespace,
    owner,
    endpoint: {
      service: extra.service ?? SERVICE,
      instanceId: `${host}:${port}`,
      address,
      port,
      weight: extra.weight ?? 2,
      tags: { version: '1.0', zone: 'a' },
      metadata: { team: 'core' },
      source: `pod/prod/user-${address}`,
    },
  };
}

function registry(options: Partial<EtcdRegistryOptions> & { prefix: string; clusterId: string }): EtcdRegistry {
  const r = new EtcdRegistry({ endpoints, leaseTtlSeconds: 10, callTimeoutMs: 5000, ...options });
  registries.push(r);
  return r;
}

/** One reconcile as the controller does it: owned records → plan → apply. */
async function sync(
  backend: EtcdRegistry,
  owner: Owner,
  desired: RegistryEntry[],
  policy: Policy = 'sync',
  service = SERVICE,
): Promise<readonly ForeignEntryConflict[]> {
  return reconcileOnce(backend, owner, { registryNamespace: NS, service }, desired, policy);
}

/** The json value another cluster (`owner`) writes for `address`:8080. */
function foreignJson(owner: Owner, address: string): string {
  return JSON.stringify({
    serviceName: SERVICE,
    address,
    port: 8080,
    ip: address,
    tags: {},
    weight: 1,
    metadata: {},
    namespace: NS,
    owner,
    source: 'elsewhere',
  });
}

function byInstance(entries: readonly RegistryEntry[]): RegistryEntry[] {
  return [...entries].sort((a, b) => (a.endpoint.instanceId < b.endpoint.instanceId ? -1 : 1));
}

function key(prefix: string, e: RegistryEntry): string {
  return `${prefix}/${e.registryNamespace}/${e.endpoint.service}/${e.endpoint.instanceId}`;
}

async function rawGet(k: string): Promise<IKeyValue | undefined> {
  const res = await etcd.kv.range({ key: Buffer.from(k) });
  return res.kvs[0];
}

async function rawKeys(prefix: string): Promise<string[]> {
  return etcd.getAll().prefix(prefix).keys();
}

async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(200);
  }
}

interface WatchedEvent {
  readonly type: 'put' | 'delete';
  readonly key: string;
  readonly revision: string;
}

/** Watches a prefix; `settle()` resolves the events seen so far once etcd has delivered them all. */
async function watchPrefix(prefix: string): Promise<{ settle(): Promise<WatchedEvent[]>; close(): Promise<void> }> {
  const events: WatchedEvent[] = [];
  const watcher = await etcd.watch().prefix(prefix).create();
  watcher.on('put', (kv) => events.push({ type: 'put', key: kv.key.toString(), revision: kv.mod_revision }));
  watcher.on('delete', (kv) => events.push({ type: 'delete', key: kv.key.toString(), revision: kv.mod_revision }));
  return {
    async settle() {
      // Events arrive in revision order, so once a sentinel written now shows up, all earlier ones have.
      const sentinel = `${prefix}/~sentinel-${randomUUID()}`;
      await etcd.put(sentinel).value('x');
      await waitFor('the watch sentinel', () => Promise.resolve(events.some((e) => e.key === sentinel)));
      await etcd.delete().key(sentinel);
      return events.filter((e) => !e.key.startsWith(`${prefix}/~sentinel-`));
    },
    close: () => watcher.cancel(),
  };
}

void describe('EtcdRegistry against a real etcd', () => {
  void it('writes the json format with camelCase fields and reads it back as the same entries', async () => {
    const prefix = freshPrefix();
    const owner = ownerIn(`c-${randomUUID()}`);
    const backend = registry({ prefix, clusterId: owner.clusterId });
    const byIp = entry(owner, '10.0.0.12');
    const byName = entry(owner, 'vm-1.example.com', 9090);
    await sync(backend, owner, [byIp, byName]);

    const value = JSON.parse((await rawGet(key(prefix, byIp)))?.value.toString() ?? 'null') as unknown;
    assert.deepEqual(value, {
      serviceName: SERVICE,
      ip: '10.0.0.12',
      address: '10.0.0.12',
      port: 8080,
      tags: { version: '1.0', zone: 'a' },
      weight: 2,
      metadata: { team: 'core' },
      namespace: NS,
      owner: { clusterId: owner.clusterId, namespace: 'prod', name: SERVICE },
      source: 'pod/prod/user-10.0.0.12',
    });
    const named = JSON.parse((await rawGet(key(prefix, byName)))?.value.toString() ?? 'null') as Record<string, unknown>;
    assert.equal('ip' in named, false, 'a host name has no ip field');
    assert.equal(named.address, 'vm-1.example.com');

    const back = await backend.records({ registryNamespace: NS, service: SERVICE });
    assert.deepEqual(byInstance(back), byInstance([byIp, byName]));
  });

  void it("writes etcd's gRPC resolver format without Metadata, IPv6 in brackets, and reads it back with its owner from the index", async () => {
    const prefix = freshPrefix();
    const owner = ownerIn(`c-${randomUUID()}`);
    const backend = registry({ prefix, clusterId: owner.clusterId, format: 'grpc' });
    const v4 = entry(owner, '10.0.0.12');
    const v6 = entry(owner, 'fd00::12');
    await sync(backend, owner, [v4, v6]);

    const kv = await rawGet(key(prefix, v4));
    assert.equal(kv?.value.toString(), '{"Op":0,"Addr":"10.0.0.12:8080"}');
    const index = await rawGet(`${prefix}/_kube-registrar/owners/prod/user-service/10.0.0.12:8080`);
    assert.ok(index !== undefined, 'owner index exists');
    const record = JSON.parse(index.value.toString()) as { owner: unknown; tags: unknown; weight: unknown };
    assert.deepEqual(record.owner, { clusterId: owner.clusterId, namespace: 'prod', name: SERVICE });
    assert.deepEqual(record.tags, { version: '1.0', zone: 'a' });
    assert.equal(record.weight, 2);
    assert.equal(index.lease, kv?.lease);
    assert.notEqual(kv?.lease, '0');
    const value6 = JSON.parse((await rawGet(key(prefix, v6)))?.value.toString() ?? 'null') as { Addr: string };
    assert.equal(value6.Addr, '[fd00::12]:8080');
    assert.equal(key(prefix, v6), `${prefix}/prod/user-service/[fd00::12]:8080`);

    const back = await backend.records({ registryNamespace: NS, service: SERVICE });
    assert.deepEqual(byInstance(back), byInstance([v4, v6]));
  });

  void it('rewrites a grpc entry whose Metadata is a JSON object, as earlier versions wrote it, into Op and Addr with the owner index', async () => {
    const prefix = freshPrefix();
    const owner = ownerIn(`c-${randomUUID()}`);
    const backend = registry({ prefix, clusterId: owner.clusterId, format: 'grpc' });
    const e = entry(owner, '10.0.0.12');
    await sync(backend, owner, [e]);
    const indexKey = `${prefix}/_kube-registrar/owners/prod/user-service/10.0.0.12:8080`;
    const record = (await rawGet(indexKey))?.value.toString() ?? '';
    // What an earlier version left: the record in Metadata, no owner index, on the namespace's lease.
    const lease = (await rawGet(key(prefix, e)))?.lease ?? '0';
    const before = JSON.stringify({ Op: 0, Addr: '10.0.0.12:8080', Metadata: JSON.parse(record) as unknown });
    await etcd.put(key(prefix, e)).value(before).lease(lease);
    await etcd.delete().key(indexKey);

    await sync(backend, owner, [e]);
    const kv = await rawGet(key(prefix, e));
    assert.equal(kv?.value.toString(), '{"Op":0,"Addr":"10.0.0.12:8080"}');
    const index = await rawGet(indexKey);
    assert.equal(index?.value.toString(), record);
    assert.equal(index?.lease, kv?.lease);
    assert.deepEqual(await backend.records({ registryNamespace: NS, service: SERVICE }), [e]);
  });

  void it("keeps entries, owner index and lease id under a prefix without a leading '/', where a successor adopts them", async () => {
    const prefix = `kr-test-${randomUUID()}`;
    const owner = ownerIn(`c-${randomUUID()}`);
    const first = registry({ prefix, clusterId: owner.clusterId, format: 'grpc' });
    const e = entry(owner, '10.0.0.12');
    await sync(first, owner, [e]);

    assert.deepEqual((await rawKeys(`${prefix}/`)).sort(), [
      `${prefix}/_kube-registrar/leases/${owner.clusterId}/prod`,
      `${prefix}/_kube-registrar/owners/prod/user-service/10.0.0.12:8080`,
      `${prefix}/prod/user-service/10.0.0.12:8080`,
    ]);
    assert.deepEqual(await rawKeys(`/${prefix}`), [], "nothing under the prefix with a '/' in front");
    const leaseId = first.leaseIdFor(NS);
    await first.close();

    const second = registry({ prefix, clusterId: owner.clusterId, format: 'grpc' });
    assert.deepEqual(await second.adoptLeases(), [NS]);
    assert.equal(second.leaseIdFor(NS), leaseId);
    assert.deepEqual(await second.ownedByCluster(), [e]);
    await sync(second, owner, []);
    assert.deepEqual(await rawKeys(`${prefix}/prod/`), []);
    assert.deepEqual(await rawKeys(`${prefix}/_kube-registrar/owners/`), []);
  });

  void it('writes plain host:port values with the owner in an index on the same lease, and reads them back', async () => {
    const prefix = freshPrefix();
    const owner = ownerIn(`c-${randomUUID()}`);
    const backend = registry({ prefix, clusterId: owner.clusterId, format: 'hostport' });
    const e = entry(owner, '10.0.0.12');
    await sync(backend, owner, [e]);

    const kv = await rawGet(key(prefix, e));
    assert.equal(kv?.value.toString(), '10.0.0.12:8080');
    const index = await rawGet(`${prefix}/_kube-registrar/owners/prod/user-service/10.0.0.12:8080`);
    assert.ok(index !== undefined, 'owner index exists');
    assert.deepEqual((JSON.parse(index.value.toString()) as { owner: unknown }).owner, {
      clusterId: owner.clusterId,
      namespace: 'prod',
      name: SERVICE,
    });
    assert.equal(index.lease, kv?.lease);
    assert.notEqual(kv?.lease, '0');

    assert.deepEqual(await backend.records({ registryNamespace: NS, service: SERVICE }), [e]);
  });

  void it('attaches every entry to one lease with the configured TTL whose id is stored in etcd', async () => {
    const prefix = freshPrefix();
    const owner = ownerIn(`c-${randomUUID()}`);
    const backend = registry({ prefix, clusterId: owner.clusterId, leaseTtlSeconds: 17 });
    await sync(backend, owner, [entry(owner, '10.0.0.1'), entry(owner, '10.0.0.2')]);

    const leases = new Set<string>();
    for (const k of await rawKeys(`${prefix}/prod/`)) leases.add((await rawGet(k))?.lease ?? '0');
    assert.equal(leases.size, 1);
    const [leaseDec = '0'] = leases;
    const info = await etcd.leaseClient.leaseTimeToLive({ ID: leaseDec });
    assert.equal(info.grantedTTL, '17');
    assert.ok(Number(info.TTL) > 0);

    const hex = BigInt(leaseDec).toString(16);
    assert.equal(backend.leaseIdFor(NS), hex);
    const stored = await rawGet(`${prefix}/_kube-registrar/leases/${owner.clusterId}/prod`);
    assert.equal(stored?.value.toString(), hex);
    assert.equal(stored?.lease, '0', 'the lease id key itself does not hang on the lease');
  });

  void it('a restarted backend adopts the stored lease, keeps it alive, and writes nothing for an unchanged desired set', async () => {
    const prefix = freshPrefix();
    const owner = ownerIn(`c-${randomUUID()}`);
    const ttl = 4;
    const desired = [entry(owner, '10.0.0.1'), entry(owner, '10.0.0.2'), entry(owner, 'fd00::3')];
    const first = registry({ prefix, clusterId: owner.clusterId, leaseTtlSeconds: ttl, format: 'hostport' });
    await sync(first, owner, desired);
    const leaseBefore = first.leaseIdFor(NS);
    await first.close();

    const watch = await watchPrefix(prefix);
    const second = registry({ prefix, clusterId: owner.clusterId, leaseTtlSeconds: ttl, format: 'hostport' });
    assert.deepEqual(await second.adoptLeases(), [NS]);
    assert.equal(second.leaseIdFor(NS), leaseBefore);
    assert.deepEqual(await sync(second, owner, desired), []);
    assert.deepEqual(await watch.settle(), [], 'no etcd writes or deletes after a restart');
    assert.equal(second.leaseIdFor(NS), leaseBefore);

    // Outlive the TTL twice over: only the adopted lease's keepalive can keep the entries.
    await sleep(2 * ttl * 1000);
    const back = await second.records({ registryNamespace: NS, service: SERVICE });
    assert.equal(back.length, 3);
    assert.deepEqual(await watch.settle(), [], 'entries never expired');
    await watch.close();
  });

  void it('entries vanish within the lease TTL after close() because nothing keeps the lease alive', async () => {
    const prefix = freshPrefix();
    const owner = ownerIn(`c-${randomUUID()}`);
    const ttl = 5;
    const backend = registry({ prefix, clusterId: owner.clusterId, leaseTtlSeconds: ttl, format: 'hostport' });
    await sync(backend, owner, [entry(owner, '10.0.0.1'), entry(owner, '10.0.0.2')]);
    const lease = BigInt(`0x${backend.leaseIdFor(NS) ?? '0'}`);
    await backend.close();

    const closedAt = Date.now();
    const remaining = Number((await etcd.leaseClient.leaseTimeToLive({ ID: lease.toString() })).TTL);
    assert.ok(remaining > 0 && remaining <= ttl, `the lease was not revoked and has at most its TTL left (got ${remaining})`);
    await waitFor(
      'entries to expire',
      async () => (await rawKeys(`${prefix}/prod/`)).length === 0 && (await rawKeys(`${prefix}/_kube-registrar/owners/`)).length === 0,
      3 * ttl * 1000,
    );
    // etcd checks expiry every 500 ms and the poll adds 200 ms; allow that on top of the TTL.
    assert.ok(Date.now() - closedAt <= ttl * 1000 + 2000, `entries were gone ${Date.now() - closedAt} ms after close`);
  });

  void it('never modifies or deletes a foreign-owned key at the same path and reports the conflict', async () => {
    const prefix = freshPrefix();
    const owner = ownerIn(`c-${randomUUID()}`);
    const other = ownerIn(`c-other-${randomUUID()}`);
    const backend = registry({ prefix, clusterId: owner.clusterId });
    const theirs = entry(other, '10.0.0.1');
    const foreignValue = JSON.stringify({
      serviceName: SERVICE,
      address: '10.0.0.1',
      port: 8080,
      tags: {},
      weight: 1,
      metadata: {},
      namespace: NS,
      owner: other,
      source: 'elsewhere',
    });
    await etcd.put(key(prefix, theirs)).value(foreignValue);
    const handWritten = `${prefix}/prod/user-service/10.0.0.2:8080`;
    await etcd.put(handWritten).value('10.0.0.2:8080');
    const before = [await rawGet(key(prefix, theirs)), await rawGet(handWritten)];

    const conflicts = await sync(backend, owner, [entry(owner, '10.0.0.1'), entry(owner, '10.0.0.2'), entry(owner, '10.0.0.3')]);
    assert.deepEqual(conflicts.map((c) => [c.operation, c.entry.endpoint.instanceId]).sort(), [
      ['create', '10.0.0.1:8080'],
      ['create', '10.0.0.2:8080'],
    ]);
    assert.match(conflicts[0]?.message ?? '', /never modifies entries it does not own/);

    // Then the ServiceInstance goes away: our entry is removed, theirs stay.
    assert.deepEqual(await sync(backend, owner, []), []);
    const afterwards = [await rawGet(key(prefix, theirs)), await rawGet(handWritten)];
    assert.deepEqual(
      afterwards.map((kv) => [kv?.value.toString(), kv?.mod_revision]),
      before.map((kv) => [kv?.value.toString(), kv?.mod_revision]),
    );
    assert.equal(await rawGet(key(prefix, entry(owner, '10.0.0.3'))), undefined);

    // Even a hand-made delete of a foreign entry through the owned view is refused.
    const { conflicts: refused } = await new OwnedRegistry(backend, owner).applyChanges({
      create: [],
      updateOld: [],
      updateNew: [],
      delete: [{ ...theirs, owner }],
    });
    assert.equal(refused.length, 1);
    assert.equal((await rawGet(key(prefix, theirs)))?.value.toString(), foreignValue);
  });

  void it('rewrites every entry on a new lease when the lease is revoked behind its back', async () => {
    const prefix = freshPrefix();
    const owner = ownerIn(`c-${randomUUID()}`);
    const backend = registry({ prefix, clusterId: owner.clusterId, leaseTtlSeconds: 3, format: 'hostport' });
    const desired = [entry(owner, '10.0.0.1'), entry(owner, '10.0.0.2')];
    await sync(backend, owner, desired);
    const lost = backend.leaseIdFor(NS) ?? '';
    await etcd.leaseClient.leaseRevoke({ ID: BigInt(`0x${lost}`).toString() });

    // Only the backend acts here: no sync call until the entries are back.
    await waitFor('entries on a new lease', async () => {
      const fresh = backend.leaseIdFor(NS);
      return (
        fresh !== undefined &&
        fresh !== lost &&
        (await rawKeys(`${prefix}/prod/`)).length === 2 &&
        (await rawKeys(`${prefix}/_kube-registrar/owners/`)).length === 2
      );
    });
    const fresh = BigInt(`0x${backend.leaseIdFor(NS) ?? ''}`).toString();
    for (const k of [...(await rawKeys(`${prefix}/prod/`)), ...(await rawKeys(`${prefix}/_kube-registrar/owners/`))]) {
      assert.equal((await rawGet(k))?.lease, fresh, `${k} is on the new lease`);
    }
    assert.equal((await rawGet(`${prefix}/_kube-registrar/leases/${owner.clusterId}/prod`))?.value.toString(), backend.leaseIdFor(NS));
    assert.deepEqual(byInstance(await backend.records({ registryNamespace: NS, service: SERVICE })), byInstance(desired));
  });

  void it('a write that finds its lease revoked moves to a new lease and still lands', async () => {
    const prefix = freshPrefix();
    const owner = ownerIn(`c-${randomUUID()}`);
    // A long TTL keeps the keepalive from noticing first, so the write path meets the dead lease.
    const backend = registry({ prefix, clusterId: owner.clusterId, leaseTtlSeconds: 60 });
    await sync(backend, owner, [entry(owner, '10.0.0.1')]);
    const lost = backend.leaseIdFor(NS) ?? '';
    await etcd.leaseClient.leaseRevoke({ ID: BigInt(`0x${lost}`).toString() });

    await backend.applyChanges({ create: [entry(owner, '10.0.0.2')], updateOld: [], updateNew: [], delete: [] });
    const fresh = backend.leaseIdFor(NS);
    assert.ok(fresh !== undefined && fresh !== lost);
    const keys = await rawKeys(`${prefix}/prod/`);
    assert.deepEqual(keys.sort(), [key(prefix, entry(owner, '10.0.0.1')), key(prefix, entry(owner, '10.0.0.2'))]);
    for (const k of keys) assert.equal((await rawGet(k))?.lease, BigInt(`0x${fresh}`).toString());
  });

  void it('repairs an owned entry that was re-put by hand without its lease, and moves entries to a new value format', async () => {
    const prefix = freshPrefix();
    const owner = ownerIn(`c-${randomUUID()}`);
    const e = entry(owner, '10.0.0.1');
    const jsonBackend = registry({ prefix, clusterId: owner.clusterId });
    await sync(jsonBackend, owner, [e]);
    const value = (await rawGet(key(prefix, e)))?.value.toString() ?? '';
    await etcd.put(key(prefix, e)).value(value); // same bytes, but now detached from the lease
    assert.equal((await rawGet(key(prefix, e)))?.lease, '0');

    await sync(jsonBackend, owner, [e]);
    assert.equal((await rawGet(key(prefix, e)))?.lease, BigInt(`0x${jsonBackend.leaseIdFor(NS) ?? ''}`).toString());
    await jsonBackend.close();

    const hostportBackend = registry({ prefix, clusterId: owner.clusterId, format: 'hostport' });
    await sync(hostportBackend, owner, [e]);
    assert.equal((await rawGet(key(prefix, e)))?.value.toString(), '10.0.0.1:8080');
    assert.deepEqual(await hostportBackend.records({ registryNamespace: NS, service: SERVICE }), [e]);
  });

  void it('splits more than 128 operations into several transactions that all land', async () => {
    const prefix = freshPrefix();
    const owner = ownerIn(`c-${randomUUID()}`);
    const backend = registry({ prefix, clusterId: owner.clusterId, format: 'hostport' });
    const desired = Array.from({ length: 200 }, (_, i) => entry(owner, `10.1.${Math.floor(i / 250)}.${(i % 250) + 1}`));
    const watch = await watchPrefix(prefix);
    await sync(backend, owner, desired);

    const events = await watch.settle();
    const entryPuts = events.filter((e) => e.type === 'put' && !e.key.includes('/_kube-registrar/leases/'));
    assert.equal(entryPuts.length, 400, '200 values and 200 owner index keys');
    const transactions = new Set(entryPuts.map((e) => e.revision)).size;
    assert.ok(transactions >= Math.ceil(400 / 128), `${transactions} transactions for 400 operations`);
    assert.equal((await backend.records({ registryNamespace: NS, service: SERVICE })).length, 200);

    // And all of them go again in one sync.
    await sync(backend, owner, []);
    assert.deepEqual(await rawKeys(`${prefix}/prod/`), []);
    assert.deepEqual(await rawKeys(`${prefix}/_kube-registrar/owners/`), []);
    await watch.close();
  });

  void it('writes of many ServiceInstances at once share transactions, and one bad write fails alone', async () => {
    const prefix = freshPrefix();
    const clusterId = `c-${randomUUID()}`;
    const backend = registry({ prefix, clusterId });
    // Settle the lease first, as a running operator has.
    const first = ownerIn(clusterId, 'svc-first');
    await sync(backend, first, [entry(first, '10.2.0.1', 8080, { service: 'svc-first' })], 'sync', 'svc-first');
    const watch = await watchPrefix(prefix);
    const owners = Array.from({ length: 200 }, (_, i) => ownerIn(clusterId, `svc-${i}`));
    const bad = {
      ...entry(ownerIn(clusterId, 'bad'), '10.2.9.9'),
      endpoint: { ...entry(ownerIn(clusterId, 'bad'), '10.2.9.9').endpoint, service: 'no/slash' },
    };
    const results = await Promise.allSettled([
      ...owners.map((o, i) =>
        backend.applyChanges({
          create: [entry(o, `10.2.${Math.floor(i / 250) + 1}.${(i % 250) + 1}`, 8080, { service: o.name })],
          updateOld: [],
          updateNew: [],
          delete: [],
        }),
      ),
      backend.applyChanges({ create: [bad], updateOld: [], updateNew: [], delete: [] }),
    ]);
    assert.equal(results.filter((r) => r.status === 'fulfilled').length, 200, 'every good write landed');
    const failed = results.at(-1);
    assert.equal(failed?.status, 'rejected', 'the write with a slash in its service name failed');
    assert.match(String(failed.reason), /cannot be used in an etcd key/);

    const events = await watch.settle();
    const puts = events.filter((e) => e.type === 'put' && !e.key.includes('/_kube-registrar/'));
    assert.equal(puts.length, 200);
    const transactions = new Set(puts.map((e) => e.revision)).size;
    assert.ok(transactions <= 10, `200 one-entry writes issued at once went to etcd in ${transactions} transactions`);
    for (const [i, o] of owners.entries()) {
      assert.equal((await backend.records({ registryNamespace: NS, service: o.name })).length, 1, `svc-${i} is readable`);
    }
    await watch.close();
  });

  void it('writes that arrive while a long write is under way take the place left in its last transaction', async () => {
    const prefix = freshPrefix();
    const clusterId = `c-${randomUUID()}`;
    const create = (owner: Owner, i: number): Changes => ({
      create: [entry(owner, `10.3.${Math.floor(i / 250) + 1}.${(i % 250) + 1}`, 8080, { service: owner.name })],
      updateOld: [],
      updateNew: [],
      delete: [],
    });
    const late = Array.from({ length: 10 }, (_, i) => ownerIn(clusterId, `late-${i}`));
    let lateWrites: Promise<void>[] = [];
    const putsPerTxn: number[] = [];
    // The late calls are made while the first full transaction of the wave is in flight.
    const middleware = (client: EtcdClient): EtcdClient => ({
      ...client,
      txn(guards, writes) {
        const puts = writes.filter((w) => w.kind === 'put' && !w.key.includes('/_kube-registrar/')).length;
        if (puts > 0) putsPerTxn.push(puts);
        if (puts === backend.writeBatch && lateWrites.length === 0)
          lateWrites = late.map((o, i) => backend.applyChanges(create(o, 1000 + i)));
        return client.txn(guards, writes);
      },
    });
    const backend = registry({ prefix, clusterId, clientMiddleware: middleware });
    assert.equal(backend.writeBatch, 127, 'json entries per transaction: one lease guard and 127 guarded puts');
    const first = ownerIn(clusterId, 'svc-first');
    await sync(backend, first, [entry(first, '10.3.0.1', 8080, { service: 'svc-first' })], 'sync', 'svc-first');
    putsPerTxn.length = 0;

    // 1000 calls at once: the first goes alone, the other 999 are merged: 7 × 127 + 110.
    const wave = Array.from({ length: 1000 }, (_, i) => ownerIn(clusterId, `svc-${i}`));
    await Promise.all(wave.map((o, i) => backend.applyChanges(create(o, i))));
    assert.equal(lateWrites.length, 10, 'the late calls were made during the wave');
    await Promise.all(lateWrites);
    assert.deepEqual(
      putsPerTxn,
      [1, 127, 127, 127, 127, 127, 127, 127, 120],
      'the last 110 of the wave and the 10 late ones share a transaction',
    );
    assert.equal((await rawKeys(`${prefix}/${NS}/`)).length, 1011, 'every entry landed');
  });

  void it('writes nothing in dry-run mode', async () => {
    const prefix = freshPrefix();
    const owner = ownerIn(`c-${randomUUID()}`);
    const backend = registry({ prefix, clusterId: owner.clusterId, dryRun: true });
    const watch = await watchPrefix(prefix);
    await sync(backend, owner, [entry(owner, '10.0.0.1')]);
    assert.deepEqual(await watch.settle(), []);
    assert.equal(backend.leaseIdFor(NS), undefined);
    await watch.close();
  });

  void it('a foreign entry written between the plan’s read and its write is neither overwritten nor deleted', async () => {
    const prefix = freshPrefix();
    const owner = ownerIn(`c-${randomUUID()}`);
    const foreign = ownerIn(`other-${randomUUID()}`);
    const backend = registry({ prefix, clusterId: owner.clusterId });
    const mine = entry(owner, '10.0.0.1');
    const racedCreate = entry(owner, '10.0.0.2');
    await sync(backend, owner, [mine]);

    // One reconcile reads, plans a create of .2 and a delete of .1 ...
    const owned = new OwnedRegistry(backend, owner);
    const current = await owned.records({ registryNamespace: NS, service: SERVICE });
    const changes = calculatePlan({ current, desired: [racedCreate], owner, policy: 'sync' });
    assert.equal(changes.create.length, 1);
    assert.equal(changes.delete.length, 1);
    // ... while another cluster writes both keys.
    const foreignValue = (address: string): string => foreignJson(foreign, address);
    await etcd.put(key(prefix, racedCreate)).value(foreignValue('10.0.0.2'));
    await etcd.put(key(prefix, mine)).value(foreignValue('10.0.0.1'));

    await assert.rejects(owned.applyChanges(changes), (err: unknown) => err instanceof Error && err.cause instanceof EtcdEntryChangedError);
    assert.equal(
      (await rawGet(key(prefix, racedCreate)))?.value.toString(),
      foreignValue('10.0.0.2'),
      'the raced create left the foreign entry as it was',
    );
    assert.equal(
      (await rawGet(key(prefix, mine)))?.value.toString(),
      foreignValue('10.0.0.1'),
      'the raced delete left the foreign entry as it was',
    );

    // The retry reads again and reports the collision instead of writing.
    const conflicts = await sync(backend, owner, [racedCreate]);
    assert.deepEqual(
      conflicts.map((c) => c.operation),
      ['create'],
    );
    assert.equal((await rawGet(key(prefix, racedCreate)))?.value.toString(), foreignValue('10.0.0.2'));
  });

  void it('with namespace views, every service of a namespace is read in one range read, and the backend’s own writes show at once', async () => {
    const prefix = freshPrefix();
    const owner = ownerIn(`c-${randomUUID()}`);
    const reads: string[][] = [];
    const counting = (client: EtcdClient): EtcdClient => ({
      ...client,
      rangePrefixes(prefixes, known) {
        reads.push([...prefixes]);
        return client.rangePrefixes(prefixes, known);
      },
    });
    const backend = registry({ prefix, clusterId: owner.clusterId, viewMaxAgeMs: 60_000, clientMiddleware: counting });
    const services = ['a', 'b', 'c', 'd', 'e'];
    await Promise.all(services.map((service) => sync(backend, owner, [entry(owner, '10.0.1.1', 80, { service })], 'sync', service)));
    assert.deepEqual(
      (await rawKeys(`${prefix}/${NS}/`)).sort(),
      services.map((service) => `${prefix}/${NS}/${service}/10.0.1.1:80`),
      'every service got its entry',
    );
    const namespaceReads = reads.filter((r) => r.includes(`${prefix}/${NS}/`));
    assert.equal(namespaceReads.length, 1, `one read of the namespace served the five services: ${JSON.stringify(reads)}`);
    assert.equal(
      reads.filter((r) => r.some((p) => p.startsWith(`${prefix}/${NS}/`) && p !== `${prefix}/${NS}/`)).length,
      0,
      'no read of a single service',
    );

    // A second pass sees what the first wrote (from the view, without reading etcd again): nothing to do.
    const before = reads.length;
    const watch = await watchPrefix(prefix);
    try {
      for (const service of services) await sync(backend, owner, [entry(owner, '10.0.1.1', 80, { service })], 'sync', service);
      assert.deepEqual(await watch.settle(), [], 'nothing was written again');
    } finally {
      await watch.close();
    }
    assert.equal(reads.length, before, `and nothing was read again: ${JSON.stringify(reads)}`);
  });

  void it('with namespace views, scope reads of a namespace without a live lease of ours look for one once, and the first write still settles one', async () => {
    const prefix = freshPrefix();
    const owner = ownerIn(`c-${randomUUID()}`);
    const lookups: string[] = [];
    const counting = (client: EtcdClient): EtcdClient => ({
      ...client,
      get(key) {
        lookups.push(key);
        return client.get(key);
      },
    });
    const backend = registry({ prefix, clusterId: owner.clusterId, viewMaxAgeMs: 60_000, clientMiddleware: counting });
    // A cold start: every lease expired (or none was ever granted), so no read finds one.
    for (const service of ['a', 'b', 'c', 'd', 'e']) assert.deepEqual(await backend.records({ registryNamespace: NS, service }), []);
    const leaseKeyLookups = (): string[] => lookups.filter((k) => k.startsWith(`${prefix}/_kube-registrar/`));
    assert.equal(leaseKeyLookups().length, 1, `one look for the namespace's lease served five scope reads: ${JSON.stringify(lookups)}`);

    // The first write grants a lease and attaches the entry to it.
    await sync(backend, owner, [entry(owner, '10.0.3.1', 80, { service: 'a' })], 'sync', 'a');
    const stored = await rawGet(key(prefix, entry(owner, '10.0.3.1', 80, { service: 'a' })));
    assert.ok(stored !== undefined && stored.lease !== '0', 'the entry hangs on the lease the write granted');
    assert.ok(backend.leaseIdFor(NS) !== undefined);
  });

  void it('with namespace views, a foreign entry written after the view was read is neither overwritten nor deleted, and the retry sees it', async () => {
    const prefix = freshPrefix();
    const owner = ownerIn(`c-${randomUUID()}`);
    const foreign = ownerIn(`other-${randomUUID()}`);
    const backend = registry({ prefix, clusterId: owner.clusterId, viewMaxAgeMs: 60_000 });
    const mine = entry(owner, '10.0.2.1');
    await sync(backend, owner, [mine]);
    const wanted = entry(owner, '10.0.2.2');
    const foreignValue = foreignJson(foreign, '10.0.2.2');
    // Another cluster registers the same endpoint after our view of the namespace was read.
    await etcd.put(key(prefix, wanted)).value(foreignValue);
    await assert.rejects(
      sync(backend, owner, [mine, wanted]),
      (err: unknown) => err instanceof Error && err.cause instanceof EtcdEntryChangedError,
      'the write planned on the outdated view is refused by its guard',
    );
    assert.equal((await rawGet(key(prefix, wanted)))?.value.toString(), foreignValue, 'the foreign entry is as it was');
    const conflicts = await sync(backend, owner, [mine, wanted]);
    assert.deepEqual(
      conflicts.map((c) => c.operation),
      ['create'],
      'the retry reads the namespace again and reports the collision instead of writing',
    );
    assert.equal((await rawGet(key(prefix, wanted)))?.value.toString(), foreignValue);
    assert.ok((await rawGet(key(prefix, mine))) !== undefined, 'our own entry stays');
  });

  void it('with namespace views, an entry deleted by hand is put back once the view is older than its age', async () => {
    const prefix = freshPrefix();
    const owner = ownerIn(`c-${randomUUID()}`);
    const backend = registry({ prefix, clusterId: owner.clusterId, viewMaxAgeMs: 1000 });
    const mine = entry(owner, '10.0.3.1');
    await sync(backend, owner, [mine]);
    await etcd.delete().key(key(prefix, mine));
    // Proves the view was read before the deletion: within its age a pass plans on it.
    await sync(backend, owner, [mine]);
    await sleep(1100);
    await sync(backend, owner, [mine]);
    assert.ok((await rawGet(key(prefix, mine))) !== undefined, 'the entry is back');
  });

  void it('a value no format decodes is someone else’s: reported as a conflict, never overwritten', async () => {
    const prefix = freshPrefix();
    const owner = ownerIn(`c-${randomUUID()}`);
    const backend = registry({ prefix, clusterId: owner.clusterId });
    const wanted = entry(owner, '10.0.0.3');
    await etcd.put(key(prefix, wanted)).value('{not an endpoint');
    const conflicts = await sync(backend, owner, [wanted]);
    assert.equal(conflicts.length, 1);
    assert.match(conflicts[0]?.message ?? '', /nobody known/);
    assert.equal((await rawGet(key(prefix, wanted)))?.value.toString(), '{not an endpoint');
  });

  void it('a lease move cut off after its first transaction puts every entry back at the next retry, without waiting for a resync', async () => {
    const prefix = freshPrefix();
    const owner = ownerIn(`c-${randomUUID()}`);
    const proxy = await TcpProxy.start(endpoints[0] ?? '');
    let armed = false;
    let cutAfterFirstMove = false;
    // Cuts the real link right after the transaction that stores a new lease id (the move's first).
    const middleware = (client: EtcdClient): EtcdClient => ({
      ...client,
      async txn(guards, writes) {
        const result = await client.txn(guards, writes);
        if (armed && result.succeeded && writes.some((w) => w.kind === 'put' && w.key.includes('/_kube-registrar/leases/'))) {
          armed = false;
          cutAfterFirstMove = true;
          proxy.cut('close');
        }
        return result;
      },
    });
    try {
      const backend = registry({
        prefix,
        clusterId: owner.clusterId,
        endpoints: [proxy.url('http')],
        maxTxnOps: 3,
        leaseTtlSeconds: 10,
        clientMiddleware: middleware,
      });
      const desired = Array.from({ length: 10 }, (_, i) => entry(owner, `10.0.1.${i + 1}`));
      await sync(backend, owner, desired);
      const entryKeys = async (): Promise<IKeyValue[]> => (await etcd.getAll().prefix(`${prefix}/${NS}/`).exec()).kvs;
      const first = await entryKeys();
      assert.equal(first.length, 10);
      const firstLease = first[0]?.lease ?? '';

      armed = true;
      await etcd.leaseClient.leaseRevoke({ ID: firstLease });
      await waitFor('the lease move to start and be cut off', () => Promise.resolve(cutAfterFirstMove), 20_000);
      await sleep(300);
      proxy.heal();

      // Only the next keepalive interval's retry can bring the rest back: nothing calls sync here.
      await waitFor(
        'all ten entries back on one live lease',
        async () => {
          const kvs = await entryKeys();
          const leases = new Set(kvs.map((kv) => kv.lease));
          return kvs.length === 10 && leases.size === 1 && !leases.has(firstLease);
        },
        30_000,
      );
      const stored = await rawGet(`${prefix}/_kube-registrar/leases/${owner.clusterId}/${NS}`);
      const kvs = await entryKeys();
      assert.equal(BigInt(`0x${stored?.value.toString() ?? '0'}`).toString(), kvs[0]?.lease, 'the entries hang on the stored lease');
    } finally {
      await proxy.close();
    }
  });
});
