/**
 * TypeScript gRPC clients (grpc-js) dialling `etcd:///<prefix>/<namespace>/<service>` through the
 * discovery package's resolver, against the bed's etcd: entries are written exactly as the
 * operator writes them in the `grpc` format (its codec and key layout, value and owner index on a
 * lease), and the servers are real grpc-js servers on loopback that answer with their own name.
 *
 * Checked: round_robin reaches every registered server and follows removals, additions and
 * rewrites of entries; pick_first follows the removal of the server it is connected to; the
 * four-slash target of a prefix starting with '/'; targets that are in the wrong namespace, name no
 * service, or point at an unreachable etcd fail their calls with UNAVAILABLE saying why.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { createServer } from 'node:net';
import { after, before, describe, test } from 'node:test';

import {
  credentials,
  makeGenericClientConstructor,
  Server,
  ServerCredentials,
  status,
  type Client,
  type ServiceDefinition,
  type ServiceError,
} from '@grpc/grpc-js';
import { Etcd3, type Lease } from 'etcd3';

import { registerEtcdResolver, type ResolverRegistration } from '../../packages/discovery/src/grpc/resolver.ts';
import { encodeEntry } from '../../src/registry/etcd/codec.ts';
import { EtcdKeyLayout } from '../../src/registry/etcd/keys.ts';
import type { RegistryEntry } from '../../src/registry/types.ts';
import { waitFor } from '../support/faults.ts';
import { bedEtcdEndpoints } from '../support/env.ts';

const endpoints = bedEtcdEndpoints();

/** Generous: a loaded 2-core machine. */
const WAIT_MS = 60_000;
/** Calls in a row that must avoid a removed server before the channel is taken to have followed. */
const CONSECUTIVE = 20;
const NAMESPACE = 'prod';
const ROUND_ROBIN = { 'grpc.service_config': JSON.stringify({ loadBalancingConfig: [{ round_robin: {} }] }) };

const identity = (b: Buffer): Buffer => b;
/** A unary method answering with the server's name. */
const WHO: ServiceDefinition = {
  name: {
    path: '/test.Who/Name',
    requestStream: false,
    responseStream: false,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: identity,
    responseDeserialize: identity,
  },
};
const WhoClient = makeGenericClientConstructor(WHO, 'Who');

/** A grpc-js server on loopback that answers with its name. */
interface NamedServer {
  readonly name: string;
  readonly port: number;
  readonly server: Server;
}

async function startServer(name: string): Promise<NamedServer> {
  const server = new Server();
  server.addService(WHO, { name: (_call: unknown, callback: (e: null, b: Buffer) => void) => callback(null, Buffer.from(name)) });
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p)));
  });
  return { name, port, server };
}

const etcd = new Etcd3({ hosts: endpoints });
const prefix = `grpcjs-${randomUUID().slice(0, 8)}`;
const layout = new EtcdKeyLayout(prefix);
let lease: Lease | undefined;
let leaseId = '';
let registration: ResolverRegistration | undefined;
const servers: NamedServer[] = [];
const clients: Client[] = [];

/** The entry the operator writes for `server` as an endpoint of `service`. */
function entryOf(
  service: string,
  server: NamedServer,
  namespace = NAMESPACE,
  extra: { tags?: Record<string, string>; owner?: string } = {},
): RegistryEntry {
  const owner = { clusterId: 'test', namespace, name: extra.owner ?? `${service}-si` };
  return {
    registryNamespace: namespace,
    k8sNamespace: namespace,
    owner,
    endpoint: {
      service,
      instanceId: `127.0.0.1:${server.port}`,
      address: '127.0.0.1',
      port: server.port,
      weight: 1,
      tags: extra.tags ?? {},
      metadata: {},
      source: `static/${namespace}/${service}-si/${server.name}`,
    },
  };
}

/** Writes entries as the operator does for `format: grpc`: value and owner index in one transaction, on its lease. */
async function write(keys: EtcdKeyLayout, ...entries: RegistryEntry[]): Promise<void> {
  const ops = entries.flatMap((entry) => {
    const { registryNamespace: ns, endpoint } = entry;
    const encoded = encodeEntry('grpc', entry);
    assert.ok(encoded.ownerIndex !== undefined);
    return [
      etcd
        .put(keys.entry(ns, endpoint.service, endpoint.instanceId))
        .value(encoded.value)
        .lease(leaseId),
      etcd
        .put(keys.ownerIndex(ns, endpoint.service, endpoint.instanceId))
        .value(encoded.ownerIndex)
        .lease(leaseId),
    ];
  });
  await etcd
    .if(keys.entry('probe', 'probe', 'probe'), 'Create', '==', 0)
    .then(...ops)
    .commit();
}

/** Deletes an entry as the operator does: value and owner index in one transaction. */
async function remove(keys: EtcdKeyLayout, entry: RegistryEntry): Promise<void> {
  const { registryNamespace: ns, endpoint } = entry;
  await etcd
    .if(keys.entry('probe', 'probe', 'probe'), 'Create', '==', 0)
    .then(
      etcd.delete().key(keys.entry(ns, endpoint.service, endpoint.instanceId)),
      etcd.delete().key(keys.ownerIndex(ns, endpoint.service, endpoint.instanceId)),
    )
    .commit();
}

function dial(target: string, options: Record<string, string> = {}): Client {
  const client = new WhoClient(target, credentials.createInsecure(), options);
  clients.push(client);
  return client;
}

/** The name of the server that answered one call, or the call's error. */
async function who(client: Client): Promise<string> {
  return new Promise((resolve, reject) => {
    client.makeUnaryRequest('/test.Who/Name', identity, identity, Buffer.alloc(0), { deadline: Date.now() + 10_000 }, (err, res) =>
      err ? reject(err) : resolve(res?.toString() ?? ''),
    );
  });
}

/** The names that answered `n` calls in a row. */
async function answers(client: Client, n: number): Promise<string[]> {
  const names: string[] = [];
  for (let i = 0; i < n; i++) names.push(await who(client));
  return names;
}

/** Waits until `n` calls in a row are answered by exactly the servers `want` (each at least once); returns those answers. */
async function waitForAnswers(client: Client, want: readonly NamedServer[], what: string, n = CONSECUTIVE): Promise<string[]> {
  const wanted = new Set(want.map((s) => s.name));
  return waitFor(
    what,
    async () => {
      const names = await answers(client, n);
      const seen = new Set(names);
      return seen.size === wanted.size && [...seen].every((name) => wanted.has(name)) ? names : undefined;
    },
    WAIT_MS,
    50,
  );
}

/** The error a call fails with, or undefined if it succeeds. */
async function failure(client: Client): Promise<ServiceError | undefined> {
  return who(client).then(
    () => undefined,
    (err: unknown) => err as ServiceError,
  );
}

/** The error a call fails with (fails the test if it succeeds). */
async function callError(client: Client): Promise<ServiceError> {
  return (await failure(client)) ?? assert.fail('the call succeeded');
}

before(async () => {
  lease = etcd.lease(600, { autoKeepAlive: false });
  leaseId = await lease.grant();
  for (const name of ['a', 'b', 'c']) servers.push(await startServer(name));
  registration = registerEtcdResolver({ hosts: endpoints, namespace: NAMESPACE });
});

after(async () => {
  for (const client of clients) client.close();
  for (const s of servers) s.server.forceShutdown();
  await registration?.close();
  await lease?.revoke().catch(() => undefined);
  await etcd.delete().prefix(`${prefix}/`);
  await etcd.delete().prefix(`/${prefix}/`);
  etcd.close();
});

describe('grpc-js channels resolving etcd:/// targets through the discovery resolver', () => {
  test('round_robin reaches every registered server, and follows a removal, an addition and a rewrite', async () => {
    const [a, b, c] = servers as [NamedServer, NamedServer, NamedServer];
    const service = 'rr';
    await write(layout, entryOf(service, a), entryOf(service, b), entryOf(service, c));
    const target = layout.grpcTarget(NAMESPACE, service);
    assert.equal(target, `etcd:///${prefix}/${NAMESPACE}/${service}`, 'the target Go clients dial');
    const client = dial(target, ROUND_ROBIN);
    await waitForAnswers(client, [a, b, c], 'calls to reach a, b and c');

    await remove(layout, entryOf(service, b));
    await waitForAnswers(client, [a, c], `${CONSECUTIVE} calls in a row to reach a and c, never b`);

    await write(layout, entryOf(service, b));
    await waitForAnswers(client, [a, b, c], 'calls to reach b again once it is registered again');

    // Rewrite a's entry as the operator does when its owner or tags change, calling all along. Then
    // remove c: once the channel has followed that, it has seen the rewrite, written before.
    let calling = true;
    const made: string[] = [];
    const loop = (async () => {
      while (calling) made.push(await who(client));
    })();
    try {
      await write(layout, entryOf(service, a, NAMESPACE, { tags: { version: '2' }, owner: 'rr-si-renamed' }));
      await remove(layout, entryOf(service, c));
      await waitForAnswers(client, [a, b], 'calls to reach a and b, never c, after the rewrite of a');
    } finally {
      calling = false;
    }
    await loop; // rejects with the first failed call, if any failed
    assert.ok(made.length > 0, 'calls were made while the entry was rewritten');
    assert.ok(made.includes('a'), 'a kept answering after its entry was rewritten');
  });

  test('pick_first (the default) works and moves on when the server it is connected to is removed', async () => {
    const [a, b] = servers as [NamedServer, NamedServer];
    const service = 'pf';
    await write(layout, entryOf(service, a), entryOf(service, b));
    const client = dial(layout.grpcTarget(NAMESPACE, service));
    const first = await who(client);
    const connected = first === 'a' ? a : b;
    const other = first === 'a' ? b : a;
    assert.deepEqual(new Set(await answers(client, 5)), new Set([connected.name]), 'pick_first sticks to one server');

    await remove(layout, entryOf(service, connected));
    await waitForAnswers(client, [other], `${CONSECUTIVE} calls in a row to reach ${other.name}, never ${connected.name}`);
  });

  test('round_robin fails calls with UNAVAILABLE naming the service once its last entry is removed, and recovers when one comes back', async () => {
    const [a] = servers as [NamedServer];
    const service = 'emptied';
    await write(layout, entryOf(service, a));
    const client = dial(layout.grpcTarget(NAMESPACE, service), ROUND_ROBIN);
    assert.equal(await who(client), 'a');

    await remove(layout, entryOf(service, a));
    const err = await waitFor('calls to fail once no entry is left', async () => failure(client), WAIT_MS, 50);
    assert.equal(err.code, status.UNAVAILABLE, err.message);
    assert.match(err.details, new RegExp(`no instance of ${service} in registry namespace ${NAMESPACE} .* is registered`));

    await write(layout, entryOf(service, a));
    await waitForAnswers(client, [a], 'calls to reach a again once it is registered again');
  });

  test('a prefix starting with a slash is dialled with four slashes, as in Go', async () => {
    const [a] = servers as [NamedServer];
    const slashed = new EtcdKeyLayout(`/${prefix}`);
    const service = 'slash';
    await write(slashed, entryOf(service, a));
    const target = slashed.grpcTarget(NAMESPACE, service);
    assert.equal(target, `etcd:////${prefix}/${NAMESPACE}/${service}`);
    assert.equal(await who(dial(target)), 'a');
  });

  test('a target in another namespace than the pinned one fails its calls with UNAVAILABLE saying so', async () => {
    const [a] = servers as [NamedServer];
    const service = 'elsewhere';
    // The entry exists: the call fails because of the pin, not for want of an instance.
    await write(layout, entryOf(service, a, 'dev'));
    assert.deepEqual(Object.keys(await etcd.getAll().prefix(layout.servicePrefix('dev', service)).strings()).length, 1);
    const err = await callError(dial(layout.grpcTarget('dev', service)));
    assert.equal(err.code, status.UNAVAILABLE, err.message);
    assert.match(
      err.details,
      new RegExp(`etcd:///${prefix}/dev/${service} is in registry namespace dev, but this process is pinned to prod`),
    );
  });

  test('a target that names no service fails its calls with UNAVAILABLE saying how to write it', async () => {
    const err = await callError(dial(`etcd:///${prefix}`));
    assert.equal(err.code, status.UNAVAILABLE, err.message);
    assert.match(err.details, /does not name a service: dial etcd:\/\/\/<prefix>\/<namespace>\/<service>/);
  });

  test('an etcd that cannot be reached fails the calls with UNAVAILABLE after the first-read timeout', async () => {
    const closedPort = await new Promise<number>((resolve) => {
      const probe = createServer().listen(0, '127.0.0.1', () => {
        const { port } = probe.address() as { port: number };
        probe.close(() => resolve(port));
      });
    });
    const unreachable = registerEtcdResolver({ scheme: 'etcd-down', hosts: `http://127.0.0.1:${closedPort}`, initialReadTimeoutMs: 1_000 });
    try {
      const err = await callError(dial(`etcd-down:///${prefix}/${NAMESPACE}/rr`));
      assert.equal(err.code, status.UNAVAILABLE, err.message);
      assert.match(err.details, new RegExp(`could not read rr in registry namespace ${NAMESPACE} .* within 1000 ms`));
    } finally {
      await unreachable.close();
    }
  });
});
