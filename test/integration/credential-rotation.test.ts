/**
 * Rotated registry credentials are picked up without a restart. An etcd of this file's own with
 * authentication on and a Consul agent with ACLs on; the operator reads the credentials from
 * Secrets, which it may only `get`, and re-reads them every min(resync period, 30 s).
 *
 * What a user relies on: after the etcd user's password (or the Consul token) is rotated and the
 * Secret updated to match, changes keep landing in the registry with no restart, and no entry ever
 * drops meanwhile: the new backend adopts the etcd lease and the Consul heartbeat of the old one. A
 * Secret updated to credentials the registry refuses leaves the old backend serving. No password or
 * token shows up in the operator's log.
 */
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, test } from 'node:test';
import { CoreV1Api, type KubeConfig } from '@kubernetes/client-node';
import { Etcd3 } from 'etcd3';
import { startAclConsulAgent, type AclConsulAgent } from '../support/consul-acl.ts';
import { adminKubeConfig, bedEnv, uniqueSuffix } from '../support/env.ts';
import {
  deleteRegistry,
  etcdKeys,
  findSecrets,
  passingInstances,
  startOperatorOn,
  startOwnEtcd,
  waitFor,
  type FaultOperator,
  type OwnEtcd,
} from '../support/faults.ts';
import { createNamespace, createRegistry, createServiceInstance, installCrds, patchServiceInstance } from '../support/kube.ts';
import { cloneConsulToken, ConsulPassingWatch, deleteConsulToken, EtcdPrefixWatch, etcdctlPasswd } from '../support/rotation.ts';

const sfx = uniqueSuffix();
const clusterId = `rot-${sfx}`;
const etcdNs = `rot-etcd-${sfx}`;
const consulNs = `rot-consul-${sfx}`;
const credsNs = `rot-creds-${sfx}`;
const etcdRegistryName = `rot-etcd-${sfx}`;
const consulRegistryName = `rot-consul-${sfx}`;
const prefix = `/rot-${sfx}`;
const RESYNC_S = 3;
/** Slack on top of the resync period: the machine is shared and small, so generous. */
const SLACK_MS = 45_000;
const LEASE_TTL_S = 15;
const SETTLE_MS = 60_000;

const password = (): string => randomBytes(12).toString('hex');
const rootPassword = password();
/** Every password and token this file hands out, for the leak scan. */
const secrets: string[] = [rootPassword];

let kc: KubeConfig;
let own: OwnEtcd | undefined;
let root: Etcd3 | undefined;
let consul: AclConsulAgent | undefined;
let consulToken = '';
let operator: FaultOperator | undefined;

async function putSecret(name: string, data: Record<string, string>): Promise<void> {
  const api = kc.makeApiClient(CoreV1Api);
  const body = { metadata: { name }, stringData: data };
  try {
    await api.replaceNamespacedSecret({ namespace: credsNs, name, body });
  } catch (err: unknown) {
    if ((err as { code?: number }).code !== 404) throw err;
    await api.createNamespacedSecret({ namespace: credsNs, body });
  }
}

/** Lines of the operator's log that contain `text`. */
async function logLines(text: string): Promise<string[]> {
  return ((await operator?.log()) ?? '').split('\n').filter((l) => l.includes(text));
}

describe('rotated registry credentials are picked up without a restart', () => {
  before(async () => {
    kc = adminKubeConfig();
    await installCrds(kc);
    await createNamespace(kc, etcdNs, { rotation: sfx });
    await createNamespace(kc, consulNs, { rotation: sfx });
    await createNamespace(kc, credsNs);

    own = await startOwnEtcd();
    const etcd = own;
    const ctl = (args: readonly string[]): Promise<string> => etcd.ctl(args);
    const firstPassword = password();
    secrets.push(firstPassword);
    await ctl(['user', 'add', `root:${rootPassword}`]);
    await ctl(['user', 'grant-role', 'root', 'root']);
    await ctl(['role', 'add', 'rot']);
    // One grant covers the entries and the operator's bookkeeping under the Registry's prefix.
    await ctl(['role', 'grant-permission', '--prefix=true', 'rot', 'readwrite', `${prefix}/`]);
    await ctl(['user', 'add', `rot:${firstPassword}`]);
    await ctl(['user', 'grant-role', 'rot', 'rot']);
    await ctl(['auth', 'enable']);
    root = new Etcd3({ hosts: own.clientUrl, auth: { username: 'root', password: rootPassword } });
    await putSecret('etcd', { username: 'rot', password: firstPassword });

    consul = await startAclConsulAgent();
    secrets.push(consul.managementToken);
    consulToken = await consul.createToken(
      `service_prefix "${consulNs}-" { policy = "write" }\nnode_prefix "" { policy = "read" }\nagent_prefix "" { policy = "read" }`,
    );
    secrets.push(consulToken);
    await putSecret('consul', { token: consulToken });

    const common = {
      default: false,
      namespaceSelector: { matchLabels: { rotation: sfx } },
      namespace: '{namespace}',
      leaseTTLSeconds: LEASE_TTL_S,
    };
    await createRegistry(kc, etcdRegistryName, {
      ...common,
      type: 'etcd',
      etcd: { endpoints: [own.clientUrl], prefix, credentialsSecretRef: { name: 'etcd', namespace: credsNs } },
    });
    await createRegistry(kc, consulRegistryName, {
      ...common,
      type: 'consul',
      consul: { address: consul.address, serviceName: '{namespace}-{service}', tokenSecretRef: { name: 'consul', namespace: credsNs } },
    });
    await createServiceInstance(kc, etcdNs, 'api', {
      service: 'api',
      registries: [etcdRegistryName],
      endpoints: [{ address: '10.90.0.1', port: 80 }],
    });
    await createServiceInstance(kc, consulNs, 'api', {
      service: 'api',
      registries: [consulRegistryName],
      endpoints: [{ address: '10.91.0.1', port: 80 }],
    });
    operator = await startOperatorOn({
      kubeconfig: bedEnv('KUBECONFIG'),
      flags: [
        `--cluster-id=${clusterId}`,
        `--watch-namespaces=${etcdNs},${consulNs}`,
        `--resync-period=${RESYNC_S}`,
        '--registry-timeout=5',
      ],
    });
  });

  after(async () => {
    await operator?.process.stop();
    for (const name of [etcdRegistryName, consulRegistryName]) await deleteRegistry(kc, name).catch(() => undefined);
    root?.close();
    await own?.close();
    await consul?.stop();
  });

  test("etcd: after the user's password and the Secret change together, a change lands with the new password and the watch sees no delete", async () => {
    assert.ok(own && root && operator);
    const client = root;
    const dir = `${prefix}/${etcdNs}/api/`;
    const keys = async (): Promise<string[]> => (await etcdKeys(client, dir)).map((kv) => kv.key.slice(dir.length)).sort();
    await waitFor('the first entry in etcd', async () => ((await keys()).includes('10.90.0.1:80') ? true : undefined), SETTLE_MS);
    const leaseBefore = (await etcdKeys(client, dir))[0]?.lease;

    const watch = await EtcdPrefixWatch.start(client, `${prefix}/`);
    try {
      // The watch works: a write by the test shows up in it, and its delete too (then the count restarts).
      await client.put(`${prefix}/probe`).value('x');
      await client.delete().key(`${prefix}/probe`);
      await waitFor(
        'the watch to see the probe',
        async () => (watch.puts.includes(`${prefix}/probe`) && watch.deletes.length === 1 ? true : undefined),
        10_000,
      );
      watch.deletes.length = 0;

      const newPassword = password();
      secrets.push(newPassword);
      await etcdctlPasswd(own.etcdctlBinary, own.clientUrl, 'rot', newPassword, `root:${rootPassword}`);
      await putSecret('etcd', { username: 'rot', password: newPassword });
      await patchServiceInstance(kc, etcdNs, 'api', {
        endpoints: [
          { address: '10.90.0.1', port: 80 },
          { address: '10.90.0.2', port: 80 },
        ],
      });
      const started = Date.now();
      await waitFor(
        'the new endpoint in etcd',
        async () => ((await keys()).includes('10.90.0.2:80') ? true : undefined),
        RESYNC_S * 1000 + SLACK_MS,
      );
      console.log(`etcd: the change landed ${Date.now() - started} ms after the rotation`);
      assert.ok(watch.puts.includes(`${dir}10.90.0.2:80`), 'the watch saw the new entry being put');

      // The lease was adopted, not replaced, and the new backend keeps it alive with the new password.
      await sleep(LEASE_TTL_S * 1000 + 5000);
      assert.deepEqual(await keys(), ['10.90.0.1:80', '10.90.0.2:80']);
      assert.equal(
        (await etcdKeys(client, dir)).find((kv) => kv.key === `${dir}10.90.0.1:80`)?.lease,
        leaseBefore,
        'the first entry still hangs on the same lease',
      );
      assert.deepEqual(watch.deletes, [], 'no entry was deleted during the rotation');
    } finally {
      await watch.close();
    }
    assert.ok(
      (await logLines('backend rebuilt with the rotated credentials')).some((l) => l.includes(etcdRegistryName)),
      'the log says the backend was rebuilt',
    );
    assert.ok(operator.process.running, 'the operator was not restarted');
  });

  test('Consul: a token Consul refuses leaves the old backend serving; a second token with the same policy takes over when the first is deleted, and no instance drops', async () => {
    assert.ok(consul && operator);
    const { address, managementToken } = consul;
    const service = `${consulNs}-api`;
    await waitFor(
      'the first instance to pass in Consul',
      async () => ((await passingInstances(address, service, managementToken)).includes('10.91.0.1:80') ? true : undefined),
      SETTLE_MS,
    );

    const watch = new ConsulPassingWatch(address, service, managementToken);
    try {
      await waitFor('the watch to see the first instance', async () => (watch.seen.has('10.91.0.1:80') ? true : undefined), 10_000);

      // Fail-safe: a token Consul does not know is not taken; the old one keeps serving.
      const bogus = randomUUID();
      secrets.push(bogus);
      await putSecret('consul', { token: bogus });
      await waitFor(
        'the operator to refuse the bogus token',
        async () =>
          (await logLines('the rotated credentials cannot be used')).some((l) => l.includes(consulRegistryName)) ? true : undefined,
        RESYNC_S * 1000 + SLACK_MS,
      );
      await patchServiceInstance(kc, consulNs, 'api', {
        endpoints: [
          { address: '10.91.0.1', port: 80 },
          { address: '10.91.0.2', port: 80 },
        ],
      });
      await waitFor(
        'the second instance to pass, written with the old token',
        async () => (watch.seen.has('10.91.0.2:80') ? true : undefined),
        RESYNC_S * 1000 + SLACK_MS,
      );

      // The rotation: a second token with the same policy into the Secret, then the first deleted.
      const second = await cloneConsulToken(address, managementToken, consulToken);
      secrets.push(second);
      await putSecret('consul', { token: second });
      await deleteConsulToken(address, managementToken, consulToken);
      await patchServiceInstance(kc, consulNs, 'api', {
        endpoints: [
          { address: '10.91.0.1', port: 80 },
          { address: '10.91.0.2', port: 80 },
          { address: '10.91.0.3', port: 80 },
        ],
      });
      const started = Date.now();
      await waitFor(
        'the third instance to pass',
        async () => (watch.seen.has('10.91.0.3:80') ? true : undefined),
        RESYNC_S * 1000 + SLACK_MS,
      );
      console.log(`Consul: the change landed ${Date.now() - started} ms after the rotation`);

      // The heartbeat keeps passing with the second token: nothing fails over more than a TTL.
      await sleep(2 * LEASE_TTL_S * 1000);
      assert.deepEqual(await passingInstances(address, service, managementToken), ['10.91.0.1:80', '10.91.0.2:80', '10.91.0.3:80']);
      assert.ok(watch.answers > 0 && watch.lastError === undefined, `the watch is answering (${String(watch.lastError)})`);
      assert.deepEqual(watch.dropped, [], 'no instance was deregistered or stopped passing during the rotation');
    } finally {
      await watch.close();
    }
    assert.ok(
      (await logLines('backend rebuilt with the rotated credentials')).some((l) => l.includes(consulRegistryName)),
      'the log says the backend was rebuilt',
    );
    assert.ok(operator.process.running, 'the operator was not restarted');
  });

  test('no password or token appears in the operator log', async () => {
    assert.ok(operator);
    assert.deepEqual(findSecrets({ 'operator log': await operator.log() }, secrets), []);
  });
});
