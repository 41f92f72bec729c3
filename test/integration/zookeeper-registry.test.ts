/**
 * The ZooKeeper backend against the bed's real ZooKeeper (ZOOKEEPER_CONNECT). Every test works
 * under its own base path, so tests share one server and run in any order; a third client
 * (node-zookeeper-client used directly) watches the nodes the way a consumer would.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, describe, it } from 'node:test';

import { encodeEntry } from '../../src/registry/etcd/codec.ts';
import { digestAcl } from '../../src/registry/zookeeper/acl.ts';
import { ZooKeeperSession } from '../../src/registry/zookeeper/client.ts';
import { hasZooKeeperCode } from '../../src/registry/zookeeper/errors.ts';
import { NO_OWNER } from '../../src/registry/zookeeper/stat.ts';
import {
  ZooKeeperEntryChangedError,
  ZooKeeperRegistry,
  type ZooKeeperRegistryOptions,
} from '../../src/registry/zookeeper/zookeeper-registry.ts';
import type { Owner, RegistryEntry } from '../../src/registry/types.ts';
import { bedEnv } from '../support/env.ts';
import { TcpProxy, waitFor } from '../support/faults.ts';
import { reconcileOnce } from '../support/reconcile.ts';
import { NodeWatcher, removeTree, startOwnZooKeeper } from '../support/zookeeper.ts';

const CONNECT = bedEnv('ZOOKEEPER_CONNECT');
const NS = 'prod';
const SERVICE = 'user-service';
const scope = { registryNamespace: NS, service: SERVICE };

const registries: ZooKeeperRegistry[] = [];
const bases: string[] = [];
const sessions: ZooKeeperSession[] = [];

async function open(digest?: string): Promise<ZooKeeperSession> {
  const session = await ZooKeeperSession.connect({
    connectString: CONNECT,
    sessionTimeoutMs: 30_000,
    callTimeoutMs: 30_000,
    connectTimeoutMs: 60_000,
    ...(digest !== undefined ? { digestCredentials: [digest] } : {}),
  });
  sessions.push(session);
  return session;
}

const reader = await open();
const admin = await open(bedEnv('ZOOKEEPER_SUPER_AUTH'));

after(async () => {
  for (const r of registries) await r.close();
  for (const base of bases) await removeTree(admin, base);
  for (const s of sessions) await s.close();
});

function freshBase(): string {
  const base = `/kr-zk-${randomUUID()}`;
  bases.push(base);
  return base;
}

function backend(base: string, more: Partial<ZooKeeperRegistryOptions> = {}): ZooKeeperRegistry {
  const registry = new ZooKeeperRegistry({
    servers: CONNECT,
    basePath: base,
    clusterId: 'cluster-a',
    registryName: 'main',
    sessionTimeoutMs: 10_000,
    callTimeoutMs: 30_000,
    ...more,
  });
  registries.push(registry);
  return registry;
}

function ownerIn(clusterId: string, name = SERVICE): Owner {
  return { clusterId, namespace: 'prod', name };
}

function entry(owner: Owner, address: string, port = 8080, extra: { weight?: number; ns?: string } = {}): RegistryEntry {
  return {
    registryNamespace: extra.ns ?? NS,
    k8sNamespace: owner.namespace,
    owner,
    endpoint: {
      service: SERVICE,
      instanceId: `${address}:${port}`,
      address,
      port,
      weight: extra.weight ?? 1,
      tags: { zone: 'a' },
      metadata: { version: '1.2.0' },
      source: `static/prod/${owner.name}/0`,
    },
  };
}

const owner = ownerIn('cluster-a');
const strip = (entries: readonly RegistryEntry[]) =>
  entries.map(({ needsRewrite: _, ...e }) => e).sort((a, b) => a.endpoint.instanceId.localeCompare(b.endpoint.instanceId));

void describe('ZooKeeperRegistry against a real ZooKeeper', () => {
  void it("writes Curator's ServiceInstance JSON as ephemeral nodes of one stored session, and reads them back", async () => {
    const base = freshBase();
    const zk = backend(base);
    const desired = [entry(owner, '10.0.0.1'), entry(owner, '10.0.0.2', 8080, { weight: 5 })];
    assert.equal(await zk.start(), false, 'nothing to adopt on first start');
    await reconcileOnce(zk, owner, scope, desired);

    assert.deepEqual((await reader.getChildren(`${base}/${NS}/${SERVICE}`)).sort(), ['10.0.0.1:8080', '10.0.0.2:8080']);
    const node = await reader.getData(`${base}/${NS}/${SERVICE}/10.0.0.2:8080`);
    assert.equal(node.stat.ephemeralOwner, zk.leaseIdFor(), 'an ephemeral node of the backend session');
    const value = JSON.parse(node.data.toString()) as Record<string, unknown>;
    assert.equal(value.name, SERVICE);
    assert.equal(value.id, '10.0.0.2:8080');
    assert.equal(value.address, '10.0.0.2');
    assert.equal(value.port, 8080);
    assert.equal(value.serviceType, 'DYNAMIC');
    assert.deepEqual((value.payload as { metadata: unknown }).metadata, { version: '1.2.0', weight: '5', zone: 'a' });

    const stored = JSON.parse((await admin.getData(`${base}/_kube-registrar/sessions/cluster-a/main`)).data.toString()) as {
      sessionId: string;
      password: string;
    };
    assert.equal(stored.sessionId, zk.leaseIdFor(), 'the session is stored where a successor finds it');
    assert.match(stored.password, /^[0-9a-f]{32}$/);
    assert.deepEqual(strip(await zk.records(scope)), strip(desired));
    assert.equal(zk.keepalives(), 1, 'one session, whatever the number of entries');
  });

  void it('writes plain host:port values with the owner in an index beside them, and the json format as etcd does', async () => {
    const base = freshBase();
    const hostport = backend(base, { format: 'hostport' });
    const e = entry(owner, '10.0.0.7', 9090);
    await reconcileOnce(hostport, owner, scope, [e]);
    assert.equal((await reader.getData(`${base}/${NS}/${SERVICE}/10.0.0.7:9090`)).data.toString(), '10.0.0.7:9090');
    const index = await reader.getData(`${base}/_kube-registrar/owners/${NS}/${SERVICE}/10.0.0.7:9090`);
    assert.equal(index.stat.ephemeralOwner, hostport.leaseIdFor(), 'the owner index hangs on the same session');
    assert.deepEqual(strip(await hostport.records(scope)), strip([e]));

    const jsonBase = freshBase();
    const json = backend(jsonBase, { format: 'json' });
    await reconcileOnce(json, owner, scope, [e]);
    assert.equal((await reader.getData(`${jsonBase}/${NS}/${SERVICE}/10.0.0.7:9090`)).data.toString(), encodeEntry('json', e).value);
  });

  void it('a restarted backend adopts the session: no node is deleted or rewritten, and an unchanged desired set writes nothing', async () => {
    const base = freshBase();
    const first = backend(base);
    const desired = [entry(owner, '10.0.1.1'), entry(owner, '10.0.1.2')];
    await reconcileOnce(first, owner, scope, desired);
    const sessionId = first.leaseIdFor();
    const before = await Promise.all(desired.map((e) => reader.getData(`${base}/${NS}/${SERVICE}/${e.endpoint.instanceId}`)));
    const watcher = await NodeWatcher.start();
    for (const e of desired) await watcher.watch(`${base}/${NS}/${SERVICE}/${e.endpoint.instanceId}`);
    await first.close();

    const second = backend(base);
    assert.equal(await second.start(), true, 'the stored session was adopted');
    assert.equal(second.leaseIdFor(), sessionId);
    assert.deepEqual(await reconcileOnce(second, owner, scope, desired), []);
    const afterwards = await Promise.all(desired.map((e) => reader.getData(`${base}/${NS}/${SERVICE}/${e.endpoint.instanceId}`)));
    assert.deepEqual(
      afterwards.map((n) => [n.stat.mzxid, n.stat.ephemeralOwner]),
      before.map((n) => [n.stat.mzxid, sessionId]),
      'same nodes, unchanged, still of the adopted session',
    );
    // The nodes outlive the predecessor's session timeout: they hang on the adopted session.
    const predecessorTimeout = 10_000;
    await new Promise((resolve) => setTimeout(resolve, predecessorTimeout + 2000));
    assert.equal((await reader.getChildren(`${base}/${NS}/${SERVICE}`)).length, 2);
    assert.deepEqual(watcher.events, [], 'a watch saw no delete and no change');
    watcher.close();
  });

  void it('a backend rebuilt in the same process while the old one runs (rotated credentials, a changed spec) takes the session over, and the old one lets go for good', async () => {
    const base = freshBase();
    const old = backend(base);
    await reconcileOnce(old, owner, scope, [entry(owner, '10.0.11.1')]);
    const sessionId = old.leaseIdFor();
    const path = `${base}/${NS}/${SERVICE}/10.0.11.1:8080`;
    const watcher = await NodeWatcher.start();
    await watcher.watch(path);
    const replacement = backend(base, { format: 'curator' });
    assert.equal(await replacement.start(), true);
    assert.equal(replacement.leaseIdFor(), sessionId);
    await assert.rejects(old.records(scope), /handed its session over|closed/, 'the old backend no longer reads or writes');
    await reconcileOnce(replacement, owner, scope, [entry(owner, '10.0.11.1'), entry(owner, '10.0.11.2')]);
    assert.equal(old.leaseIdFor(), undefined, 'the old backend holds no session');
    assert.equal((await reader.getData(path)).stat.ephemeralOwner, sessionId);
    assert.deepEqual(watcher.events, [], 'the entry was never deleted or rewritten');
    watcher.close();
  });

  void it('a rotated digest password: with the previous one beside it the backend adopts its session and moves its nodes to the new identity, after which the new password alone is enough', async () => {
    const base = freshBase();
    const user = `rot-${randomUUID().slice(0, 8)}`;
    const [oldDigest, newDigest] = [`${user}:old-secret`, `${user}:new-secret`];
    const first = backend(base, { digest: oldDigest });
    const desired = [entry(owner, '10.0.12.1'), entry(owner, '10.0.12.2')];
    await reconcileOnce(first, owner, scope, desired);
    const sessionId = first.leaseIdFor();
    await first.close();

    const withoutPrevious = backend(base, { digest: newDigest });
    await assert.rejects(withoutPrevious.start(), /previousPassword/, 'the new password alone cannot read what the old one stored');

    const rotating = backend(base, { digest: newDigest, previousDigest: oldDigest });
    assert.equal(await rotating.start(), true, 'the session is adopted during the rotation');
    assert.ok((await rotating.migrateAcls()) >= desired.length + 3, 'entries, their service and namespace nodes and the store moved');
    await reconcileOnce(rotating, owner, scope, [entry(owner, '10.0.12.1', 8080, { weight: 7 }), desired[1]!]);
    await rotating.close();

    const rotated = backend(base, { digest: newDigest });
    assert.equal(await rotated.start(), true, 'the new password alone adopts the session');
    assert.equal(rotated.leaseIdFor(), sessionId);
    await reconcileOnce(rotated, owner, scope, [entry(owner, '10.0.12.1', 8080, { weight: 8 })]);
    const dir = `${base}/${NS}/${SERVICE}`;
    assert.deepEqual(await reader.getChildren(dir), ['10.0.12.1:8080']);
    assert.match((await reader.getData(`${dir}/10.0.12.1:8080`)).data.toString(), /"weight":"8"/);
    const oldIdentity = await open(oldDigest);
    await assert.rejects(oldIdentity.setData(`${dir}/10.0.12.1:8080`, Buffer.from('x'), -1), (err: unknown) =>
      hasZooKeeperCode(err, 'NO_AUTH'),
    );
  });

  void it('entries vanish within the session timeout once the backend closes and nobody adopts the session', async () => {
    const base = freshBase();
    const zk = backend(base, { sessionTimeoutMs: 4000 });
    await reconcileOnce(zk, owner, scope, [entry(owner, '10.0.2.1')]);
    const path = `${base}/${NS}/${SERVICE}/10.0.2.1:8080`;
    assert.notEqual(await reader.exists(path), undefined, 'the entry was there');
    await zk.close();
    await waitFor(
      'the entry to expire with its session',
      async () => ((await reader.exists(path)) === undefined ? true : undefined),
      60_000,
    );
  });

  void it('after a real session expiry every entry is written again under a new session, which is stored', async () => {
    const base = freshBase();
    const proxy = await TcpProxy.start(`http://${CONNECT}`);
    try {
      const zk = backend(base, { servers: `127.0.0.1:${proxy.port}`, sessionTimeoutMs: 4000, callTimeoutMs: 10_000 });
      const desired = [entry(owner, '10.0.3.1'), entry(owner, '10.0.3.2')];
      await reconcileOnce(zk, owner, scope, desired);
      const oldSession = zk.leaseIdFor();
      const path = `${base}/${NS}/${SERVICE}/10.0.3.1:8080`;
      assert.equal((await reader.getData(path)).stat.ephemeralOwner, oldSession);

      proxy.cut('blackhole');
      await waitFor('the server to expire the session', async () => ((await reader.exists(path)) === undefined ? true : undefined), 60_000);
      proxy.heal();
      const recreated = await waitFor(
        'the entries to be back under a new session',
        async () => {
          const stats = await Promise.all(desired.map((e) => reader.exists(`${base}/${NS}/${SERVICE}/${e.endpoint.instanceId}`)));
          return stats.every((s) => s !== undefined && s.ephemeralOwner !== oldSession) ? stats : undefined;
        },
        60_000,
      );
      const newSession = zk.leaseIdFor();
      assert.notEqual(newSession, oldSession);
      assert.ok(recreated.every((s) => s?.ephemeralOwner === newSession));
      const stored = JSON.parse((await admin.getData(`${base}/_kube-registrar/sessions/cluster-a/main`)).data.toString()) as {
        sessionId: string;
      };
      assert.equal(stored.sessionId, newSession, 'a successor would adopt the new session');
      assert.deepEqual(await reconcileOnce(zk, owner, scope, desired), []);
    } finally {
      await proxy.close();
    }
  });

  void it('a ZooKeeper outage shorter than the session timeout loses nothing: writes fail meanwhile, and afterwards the entries are there on the same session', async () => {
    const own = await startOwnZooKeeper('zk-registry-outage');
    try {
      const zk = backend('/outage', { servers: own.server.connectString, sessionTimeoutMs: 40_000, callTimeoutMs: 3000 });
      const desired = [entry(owner, '10.0.9.1'), entry(owner, '10.0.9.2')];
      await reconcileOnce(zk, owner, scope, desired);
      const sessionId = zk.leaseIdFor();
      await own.server.stop();
      const more = [...desired, entry(owner, '10.0.9.3')];
      await assert.rejects(reconcileOnce(zk, owner, scope, more), 'a write while ZooKeeper is down fails, and nothing crashes');
      assert.equal(zk.livenessLapsed(), false, 'well within the session timeout');
      await own.server.start();
      await waitFor(
        'a reconcile to succeed again',
        async () => ((await reconcileOnce(zk, owner, scope, more)).length === 0 ? true : undefined),
        60_000,
      );
      const check = await ZooKeeperSession.connect({
        connectString: own.server.connectString,
        sessionTimeoutMs: 10_000,
        callTimeoutMs: 10_000,
      });
      try {
        const dir = `/outage/${NS}/${SERVICE}`;
        const owners = await Promise.all(
          more.map(async (e) => (await check.getData(`${dir}/${e.endpoint.instanceId}`)).stat.ephemeralOwner),
        );
        assert.deepEqual(
          owners,
          [sessionId, sessionId, sessionId],
          'every entry, old and new, hangs on the session from before the outage',
        );
      } finally {
        await check.close();
      }
      assert.equal(zk.leaseIdFor(), sessionId);
      await zk.close();
    } finally {
      await own.close();
    }
  });

  void it('repairs a node edited or deleted by hand, and turns a persistent copy back into an ephemeral of its session', async () => {
    const base = freshBase();
    const zk = backend(base);
    const desired = [entry(owner, '10.0.4.1'), entry(owner, '10.0.4.2'), entry(owner, '10.0.4.3')];
    await reconcileOnce(zk, owner, scope, desired);
    const dir = `${base}/${NS}/${SERVICE}`;
    await admin.setData(`${dir}/10.0.4.1:8080`, Buffer.from('garbage'), -1);
    await admin.remove(`${dir}/10.0.4.2:8080`, -1);
    const copy = await admin.getData(`${dir}/10.0.4.3:8080`);
    await admin.remove(`${dir}/10.0.4.3:8080`, -1);
    await admin.create(`${dir}/10.0.4.3:8080`, copy.data);

    await reconcileOnce(zk, owner, scope, desired);
    for (const e of desired) {
      const node = await reader.getData(`${dir}/${e.endpoint.instanceId}`);
      assert.equal(node.stat.ephemeralOwner, zk.leaseIdFor(), `${e.endpoint.instanceId} is an ephemeral of the session again`);
    }
    assert.deepEqual(strip(await zk.records(scope)), strip(desired));
    assert.ok((await zk.records(scope)).every((e) => e.needsRewrite !== true));
  });

  void it("never modifies or deletes someone else's node at the same path, and reports the conflict", async () => {
    const base = freshBase();
    const zk = backend(base);
    const dir = `${base}/${NS}/${SERVICE}`;
    const other = ownerIn('cluster-b');
    const theirs = backend(base, { clusterId: 'cluster-b' });
    await reconcileOnce(theirs, other, scope, [entry(other, '10.0.5.1')]);
    await admin.create(`${dir}/10.0.5.2:8080`, Buffer.from('10.0.5.2:8080')); // hand-made, no owner
    const before = await Promise.all(['10.0.5.1:8080', '10.0.5.2:8080'].map((id) => reader.getData(`${dir}/${id}`)));

    const conflicts = await reconcileOnce(zk, owner, scope, [entry(owner, '10.0.5.1'), entry(owner, '10.0.5.2'), entry(owner, '10.0.5.3')]);
    assert.deepEqual(conflicts.map((c) => c.entry.endpoint.instanceId).sort(), ['10.0.5.1:8080', '10.0.5.2:8080']);
    const afterwards = await Promise.all(['10.0.5.1:8080', '10.0.5.2:8080'].map((id) => reader.getData(`${dir}/${id}`)));
    assert.deepEqual(
      afterwards.map((n) => [n.stat.mzxid, n.data.toString()]),
      before.map((n) => [n.stat.mzxid, n.data.toString()]),
    );
    assert.equal((await reader.getData(`${dir}/10.0.5.3:8080`)).stat.ephemeralOwner, zk.leaseIdFor(), 'the free one was written');
    await reconcileOnce(zk, owner, scope, []);
    assert.deepEqual((await reader.getChildren(dir)).sort(), ['10.0.5.1:8080', '10.0.5.2:8080'], 'deleting ours left theirs');
  });

  void it('two clusters sharing one ensemble and one Registry name keep a session each, and a restart of one adopts its own', async () => {
    const base = freshBase();
    const a = backend(base);
    const b = backend(base, { clusterId: 'cluster-b' });
    const other = ownerIn('cluster-b');
    await reconcileOnce(a, owner, scope, [entry(owner, '10.0.10.1')]);
    await reconcileOnce(b, other, scope, [entry(other, '10.0.10.2')]);
    const [sessionA, sessionB] = [a.leaseIdFor(), b.leaseIdFor()];
    assert.notEqual(sessionA, sessionB);
    await a.close();
    const restarted = backend(base);
    assert.equal(await restarted.start(), true);
    assert.equal(restarted.leaseIdFor(), sessionA, "cluster-a adopted its own session, not cluster-b's");
    assert.equal(b.leaseIdFor(), sessionB, 'cluster-b kept its session');
    await reconcileOnce(restarted, owner, scope, []);
    assert.deepEqual(await reader.getChildren(`${base}/${NS}/${SERVICE}`), ['10.0.10.2:8080'], "cluster-a's delete left cluster-b's entry");
    assert.equal((await reader.getData(`${base}/${NS}/${SERVICE}/10.0.10.2:8080`)).stat.ephemeralOwner, sessionB);
  });

  void it('a node written between the plan’s read and its write is neither overwritten nor deleted', async () => {
    const base = freshBase();
    const zk = backend(base);
    const dir = `${base}/${NS}/${SERVICE}`;
    await reconcileOnce(zk, owner, scope, [entry(owner, '10.0.6.1')]);
    await zk.records(scope);
    await admin.setData(`${dir}/10.0.6.1:8080`, Buffer.from('10.9.9.9:1'), -1);
    await assert.rejects(
      zk.applyChanges({ create: [], updateOld: [], updateNew: [], delete: [entry(owner, '10.0.6.1')] }),
      ZooKeeperEntryChangedError,
    );
    assert.equal((await reader.getData(`${dir}/10.0.6.1:8080`)).data.toString(), '10.9.9.9:1');
  });

  void it('splits thousands of entries into several multi transactions that all land, and removes the service node it made once empty', async () => {
    const base = freshBase();
    const zk = backend(base);
    const desired = Array.from({ length: 3000 }, (_, i) => entry(owner, `10.1.${Math.floor(i / 250)}.${i % 250}`));
    await reconcileOnce(zk, owner, scope, desired);
    const dir = `${base}/${NS}/${SERVICE}`;
    assert.equal((await reader.getChildren(dir)).length, 3000);
    await reconcileOnce(zk, owner, scope, []);
    assert.equal(await reader.exists(dir), undefined, 'the empty service node it created is gone');
    assert.notEqual(await reader.exists(`${base}/${NS}`), undefined, 'the namespace node stays');
  });

  void it('writes nothing in dry-run mode and adopts no session', async () => {
    const base = freshBase();
    const zk = backend(base, { dryRun: true });
    await reconcileOnce(zk, owner, scope, [entry(owner, '10.0.7.1')]);
    assert.equal(await reader.exists(`${base}/${NS}`), undefined);
    assert.equal(await reader.exists(`${base}/_kube-registrar/sessions/cluster-a/main`), undefined);
  });

  void it("digest ACLs: dev's credentials cannot write prod's path, and prod's entries are readable by anyone and writable by prod alone", async () => {
    const base = freshBase();
    const prodDigest = `prod-${randomUUID().slice(0, 8)}:p-secret`;
    const devDigest = `dev-${randomUUID().slice(0, 8)}:d-secret`;
    await admin.create(base, Buffer.alloc(0));
    await admin.create(`${base}/prod`, Buffer.alloc(0), { acl: [digestAcl(prodDigest), { perms: 1, scheme: 'world', id: 'anyone' }] });
    await admin.create(`${base}/dev`, Buffer.alloc(0), { acl: [digestAcl(devDigest), { perms: 1, scheme: 'world', id: 'anyone' }] });

    const prod = backend(base, { digest: prodDigest, registryName: 'prod' });
    await reconcileOnce(prod, owner, scope, [entry(owner, '10.0.8.1')]);
    const path = `${base}/prod/${SERVICE}/10.0.8.1:8080`;
    assert.equal((await reader.getData(path)).stat.ephemeralOwner, prod.leaseIdFor(), 'prod wrote its entry; anyone reads it');

    const dev = backend(base, { digest: devDigest, registryName: 'dev' });
    const devOwner = { clusterId: 'cluster-a', namespace: 'dev', name: SERVICE };
    await reconcileOnce(dev, devOwner, { registryNamespace: 'dev', service: SERVICE }, [entry(devOwner, '10.0.8.2', 8080, { ns: 'dev' })]);
    await assert.rejects(
      dev.applyChanges({ create: [entry(devOwner, '10.0.8.3')], updateOld: [], updateNew: [], delete: [] }),
      /lack permission|NO_AUTH/,
    );
    const outsider = await open(devDigest);
    await assert.rejects(outsider.setData(path, Buffer.from('x'), -1), (err: unknown) => hasZooKeeperCode(err, 'NO_AUTH'));
    await assert.rejects(outsider.remove(path, -1), (err: unknown) => hasZooKeeperCode(err, 'NO_AUTH'));
    assert.equal(await reader.exists(`${base}/prod/${SERVICE}/10.0.8.3:8080`), undefined);
    assert.notEqual(await reader.exists(`${base}/dev/${SERVICE}/10.0.8.2:8080`), undefined, 'dev writes its own path');
    assert.notEqual((await reader.getData(path)).stat.ephemeralOwner, NO_OWNER);
  });
});
