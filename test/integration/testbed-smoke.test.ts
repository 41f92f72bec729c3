/**
 * Proves that each server of the test bed is real: kube-apiserver serves namespaces, CRDs and
 * custom objects and enforces RBAC; the registry etcd keeps leased keys; the Consul agent registers
 * and answers health queries; ZooKeeper keeps nodes, ties ephemeral ones to their session and
 * enforces digest ACLs.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { ApiextensionsV1Api, CoreV1Api, CustomObjectsApi, KubeConfig, type V1CustomResourceDefinition } from '@kubernetes/client-node';
import { Etcd3 } from 'etcd3';
import zookeeper from 'node-zookeeper-client';
import { createHash } from 'node:crypto';
import { fourLetterWord } from '../../testbed/zookeeper.ts';
import { adminKubeConfig, bedEnv, uniqueSuffix } from '../support/env.ts';

describe('kube-apiserver', () => {
  test('creates a namespace, a CRD and a custom object, and reads the object back', async () => {
    const kc = adminKubeConfig();
    const core = kc.makeApiClient(CoreV1Api);
    const ext = kc.makeApiClient(ApiextensionsV1Api);
    const custom = kc.makeApiClient(CustomObjectsApi);
    const suffix = uniqueSuffix();
    const ns = `smoke-${suffix}`;
    await core.createNamespace({ body: { metadata: { name: ns } } });
    const kubeSystem = await core.readNamespace({ name: 'kube-system' });
    assert.ok(kubeSystem.metadata?.uid, 'kube-system has a UID (the default cluster id)');

    const group = `smoke${suffix}.testbed.dev`;
    const crd: V1CustomResourceDefinition = {
      metadata: { name: `widgets.${group}` },
      spec: {
        group,
        scope: 'Namespaced',
        names: { plural: 'widgets', singular: 'widget', kind: 'Widget' },
        versions: [
          {
            name: 'v1',
            served: true,
            storage: true,
            schema: {
              openAPIV3Schema: {
                type: 'object',
                properties: { spec: { type: 'object', properties: { size: { type: 'integer', minimum: 1 } } } },
              },
            },
          },
        ],
      },
    };
    await ext.createCustomResourceDefinition({ body: crd });
    for (let i = 0; ; i++) {
      const got = await ext.readCustomResourceDefinition({ name: `widgets.${group}` });
      if (got.status?.conditions?.some((c) => c.type === 'Established' && c.status === 'True')) break;
      assert.ok(i < 100, 'CRD became Established');
      await sleep(100);
    }
    // Discovery of a new CRD can lag a little behind Established.
    let created: unknown;
    for (let i = 0; ; i++) {
      try {
        created = await custom.createNamespacedCustomObject({
          group,
          version: 'v1',
          namespace: ns,
          plural: 'widgets',
          body: { apiVersion: `${group}/v1`, kind: 'Widget', metadata: { name: 'w1' }, spec: { size: 3 } },
        });
        break;
      } catch (err: unknown) {
        if (i > 50) throw err;
        await sleep(100);
      }
    }
    assert.ok(created);
    const read = (await custom.getNamespacedCustomObject({ group, version: 'v1', namespace: ns, plural: 'widgets', name: 'w1' })) as {
      spec: { size: number };
    };
    assert.equal(read.spec.size, 3);

    await assert.rejects(
      custom.createNamespacedCustomObject({
        group,
        version: 'v1',
        namespace: ns,
        plural: 'widgets',
        body: { apiVersion: `${group}/v1`, kind: 'Widget', metadata: { name: 'w2' }, spec: { size: 0 } },
      }),
      (err: unknown) => String((err as { body?: unknown }).body ?? err).includes('should be greater than or equal to 1'),
      'the schema is enforced at admission',
    );
  });

  test('enforces RBAC for a ServiceAccount token minted through the TokenRequest API', async () => {
    const kc = adminKubeConfig();
    const core = kc.makeApiClient(CoreV1Api);
    const ns = `smoke-rbac-${uniqueSuffix()}`;
    await core.createNamespace({ body: { metadata: { name: ns } } });
    await core.createNamespacedServiceAccount({ namespace: ns, body: { metadata: { name: 'probe' } } });
    const tr = await core.createNamespacedServiceAccountToken({
      namespace: ns,
      name: 'probe',
      body: { spec: { audiences: [], expirationSeconds: 600 } },
    });
    const token = tr.status?.token;
    assert.ok(token, 'a token was minted');

    const cluster = kc.getCurrentCluster();
    assert.ok(cluster);
    const saKc = new KubeConfig();
    saKc.loadFromOptions({
      clusters: [cluster],
      users: [{ name: 'probe', token }],
      contexts: [{ name: 'probe', cluster: cluster.name, user: 'probe' }],
      currentContext: 'probe',
    });
    await assert.rejects(
      saKc.makeApiClient(CoreV1Api).listNamespacedPod({ namespace: ns }),
      (err: unknown) => (err as { code?: number }).code === 403,
      'a ServiceAccount without a role is forbidden',
    );
  });
});

describe('registry etcd', () => {
  test('stores a key under a lease and forgets it when the lease is revoked', async () => {
    const etcd = new Etcd3({ hosts: bedEnv('ETCD_ENDPOINTS').split(',') });
    try {
      const key = `/smoke/${uniqueSuffix()}`;
      const lease = etcd.lease(30, { autoKeepAlive: false });
      await lease.put(key).value('hello');
      assert.equal(await etcd.get(key).string(), 'hello');
      const leaseId = await lease.grant();
      const ttl = await etcd.leaseClient.leaseTimeToLive({ ID: leaseId });
      assert.ok(Number(ttl.TTL) > 0 && Number(ttl.TTL) <= 30, `lease TTL ${ttl.TTL} is within the granted 30 s`);
      await lease.revoke();
      assert.equal(await etcd.get(key).string(), null);
    } finally {
      etcd.close();
    }
  });
});

describe('Consul agent', () => {
  test('registers a service and returns it from the health endpoint', async () => {
    const addr = bedEnv('CONSUL_HTTP_ADDR');
    const headers: Record<string, string> = process.env['CONSUL_HTTP_TOKEN'] ? { 'X-Consul-Token': process.env['CONSUL_HTTP_TOKEN'] } : {};
    const name = `smoke-${uniqueSuffix()}`;
    const reg = await fetch(`${addr}/v1/agent/service/register`, {
      method: 'PUT',
      headers,
      body: JSON.stringify({
        ID: `${name}-1`,
        Name: name,
        Address: '10.0.0.12',
        Port: 8080,
        Tags: ['zone=a'],
        Weights: { Passing: 3, Warning: 1 },
      }),
    });
    assert.equal(reg.status, 200, await reg.text());
    try {
      const res = await fetch(`${addr}/v1/health/service/${name}?passing=true`, { headers });
      const entries = (await res.json()) as {
        Service: { ID: string; Address: string; Port: number; Tags: string[]; Weights: { Passing: number } };
      }[];
      assert.equal(entries.length, 1);
      assert.deepEqual(
        {
          id: entries[0]?.Service.ID,
          address: entries[0]?.Service.Address,
          port: entries[0]?.Service.Port,
          tags: entries[0]?.Service.Tags,
          weight: entries[0]?.Service.Weights.Passing,
        },
        { id: `${name}-1`, address: '10.0.0.12', port: 8080, tags: ['zone=a'], weight: 3 },
      );
    } finally {
      await fetch(`${addr}/v1/agent/service/deregister/${name}-1`, { method: 'PUT', headers });
    }
  });
});

describe('ZooKeeper', () => {
  /** A connected client of the bed's server, with `auth` (`user:password`) as digest credentials. */
  async function zk(auth?: string): Promise<zookeeper.Client> {
    const client = zookeeper.createClient(bedEnv('ZOOKEEPER_CONNECT'), { sessionTimeout: 4000, retries: 0 });
    if (auth !== undefined) client.addAuthInfo('digest', Buffer.from(auth));
    await new Promise<void>((resolveConnected, reject) => {
      const timer = setTimeout(() => reject(new Error('ZooKeeper: not connected within 20 s')), 20_000);
      client.once('connected', () => {
        clearTimeout(timer);
        resolveConnected();
      });
      client.connect();
    });
    return client;
  }

  /** The client's exceptions are Errors at run time (util.inherits); its typings do not say so. */
  function asError(error: Error | zookeeper.Exception): Error {
    return error as Error;
  }

  function call<T>(fn: (callback: (error: Error | zookeeper.Exception | null, value: T) => void) => void): Promise<T> {
    return new Promise((resolveCall, reject) => fn((error, value) => (error ? reject(asError(error)) : resolveCall(value))));
  }

  function digestAcl(user: string, password: string): zookeeper.ACL[] {
    const digest = createHash('sha1').update(`${user}:${password}`).digest('base64');
    return [new zookeeper.ACL(zookeeper.Permission.ALL, new zookeeper.Id('digest', `${user}:${digest}`))];
  }

  test('stores nodes, and an ephemeral node lives exactly as long as the session that created it', async () => {
    const root = `/smoke-${uniqueSuffix()}`;
    const owner = await zk();
    const reader = await zk();
    try {
      await call<string>((cb) => owner.create(root, Buffer.from('root'), zookeeper.CreateMode.PERSISTENT, cb));
      await call<string>((cb) => owner.create(`${root}/eph`, Buffer.from('10.0.0.1:8080'), zookeeper.CreateMode.EPHEMERAL, cb));
      const [data, stat] = await new Promise<[Buffer, zookeeper.Stat]>((resolveData, reject) =>
        reader.getData(`${root}/eph`, (error, value, s) => (error ? reject(asError(error)) : resolveData([value, s]))),
      );
      assert.equal(data.toString(), '10.0.0.1:8080');
      assert.deepEqual(stat.ephemeralOwner, owner.getSessionId(), "the node belongs to the creator's session");

      owner.close();
      for (let i = 0; ; i++) {
        const exists = await call<zookeeper.Stat | null>((cb) => reader.exists(`${root}/eph`, cb));
        if (exists === null) break;
        assert.ok(i < 200, 'the ephemeral node is gone once its session is closed');
        await sleep(100);
      }
      assert.ok(await call<zookeeper.Stat | null>((cb) => reader.exists(root, cb)), 'the persistent parent stays');
      await call<void>((cb) => reader.remove(root, -1, (e) => cb(e, undefined)));
    } finally {
      owner.close();
      reader.close();
    }
  });

  test('digest ACLs are enforced, and the bed superuser can clean up behind them', async () => {
    const path = `/smoke-acl-${uniqueSuffix()}`;
    const dev = await zk('dev:dev-password');
    const anonymous = await zk();
    const superuser = await zk(bedEnv('ZOOKEEPER_SUPER_AUTH'));
    try {
      await call<string>((cb) =>
        dev.create(path, Buffer.from('dev'), digestAcl('dev', 'dev-password'), zookeeper.CreateMode.PERSISTENT, cb),
      );
      assert.equal((await call<Buffer>((cb) => dev.getData(path, cb))).toString(), 'dev', 'its owner reads it');
      await assert.rejects(
        call<Buffer>((cb) => anonymous.getData(path, cb)),
        (err: unknown) => err instanceof zookeeper.Exception && err.getCode() === zookeeper.Exception.NO_AUTH,
        'anyone else is refused',
      );
      await call<void>((cb) => superuser.remove(path, -1, (e) => cb(e, undefined)));
      assert.equal(await call<zookeeper.Stat | null>((cb) => anonymous.exists(path, cb)), null, 'the superuser removed it');
    } finally {
      dev.close();
      anonymous.close();
      superuser.close();
    }
  });

  test('answers srvr as a standalone server of the packaged version', async () => {
    const [host = '', port = ''] = bedEnv('ZOOKEEPER_CONNECT').split(':');
    const answer = await fourLetterWord(host, Number(port), 'srvr');
    assert.match(answer, /Mode: standalone/);
    assert.match(answer, new RegExp(`Zookeeper version: ${bedEnv('TESTBED_ZOOKEEPER_VERSION').replace(/[.+]/g, '\\$&')}`));
  });
});
