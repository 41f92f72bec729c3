/**
 * The lifecycles of DESIGN §2 through the operator into the bed's real ZooKeeper, read back the
 * way consumers read it: the children of `<basePath>/<namespace>/<service>` and their data, with
 * a watch on every node to prove what was never deleted or rewritten.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { CoreV1Api, type KubeConfig } from '@kubernetes/client-node';
import { digestAcl } from '../../src/registry/zookeeper/acl.ts';
import { ZooKeeperSession } from '../../src/registry/zookeeper/client.ts';
import { adminKubeConfig, bedEnv, uniqueSuffix } from '../support/env.ts';
import {
  createNamespace,
  createPod,
  createRegistry,
  createServiceInstance,
  deletePod,
  deleteServiceInstance,
  eventually,
  getServiceInstance,
  installCrds,
  patchServiceInstance,
  setPodReady,
} from '../support/kube.ts';
import { getRegistry } from '../support/faults.ts';
import { metricValue, startOperator, type OperatorProcess } from '../support/operator.ts';
import { childrenOf } from '../../src/registry/zookeeper/reads.ts';
import { NodeWatcher, removeTree } from '../support/zookeeper.ts';

const sfx = uniqueSuffix();
const ns = `zshop-${sfx}`;
const base = `/op-zk-${sfx}`;
const registryName = `zk-${sfx}`;
// Long enough for a restart of the operator on a busy machine, short enough to watch expire.
const SESSION_TIMEOUT = 10;
const LEASE_DURATION = 6;

let kc: KubeConfig;
let reader: ZooKeeperSession;
let admin: ZooKeeperSession;
const operators: OperatorProcess[] = [];

async function connect(digest?: string): Promise<ZooKeeperSession> {
  return ZooKeeperSession.connect({
    connectString: bedEnv('ZOOKEEPER_CONNECT'),
    sessionTimeoutMs: 30_000,
    callTimeoutMs: 30_000,
    connectTimeoutMs: 60_000,
    ...(digest !== undefined ? { digestCredentials: [digest] } : {}),
  });
}

/** What a plain consumer sees: instance id → node data, for one service. */
async function instances(service: string, namespace = ns, root = base): Promise<Map<string, string>> {
  const dir = `${root}/${namespace}/${service}`;
  const out = new Map<string, string>();
  for (const id of (await childrenOf(reader, dir)).sort()) {
    const node = await reader.getData(`${dir}/${id}`).catch(() => undefined);
    if (node !== undefined) out.set(id, node.data.toString());
  }
  return out;
}

function addresses(found: Map<string, string>): string[] {
  return [...found.values()].map((v) => (JSON.parse(v) as { address: string }).address).sort();
}

const operatorFlags = [
  '--leader-elect=true',
  `--leader-election-namespace=${ns}`,
  `--watch-namespaces=${ns},zdev-${sfx},zprod-${sfx}`,
  `--lease-duration=${LEASE_DURATION}`,
  '--renew-deadline=3',
  '--retry-period=1',
  '--resync-period=3',
];

describe('operator on ZooKeeper', () => {
  before(async () => {
    kc = adminKubeConfig();
    reader = await connect();
    admin = await connect(bedEnv('ZOOKEEPER_SUPER_AUTH'));
    await installCrds(kc);
    await createNamespace(kc, ns, { zshop: sfx });
    await createRegistry(kc, registryName, {
      type: 'zookeeper',
      default: true,
      namespaceSelector: { matchLabels: { zshop: sfx } },
      zookeeper: { servers: bedEnv('ZOOKEEPER_CONNECT'), basePath: base, sessionTimeoutSeconds: SESSION_TIMEOUT },
    });
    operators.push(await startOperator(operatorFlags));
  });

  after(async () => {
    // Trees are removed once no operator is left to repair what is removed (a removal racing a
    // repair finds a node with children again).
    for (const op of operators) await op.process.stop();
    await removeTree(admin, base);
    await removeTree(admin, `${base}-acl`);
    await reader.close();
    await admin.close();
  });

  test('the nodes hold exactly the Ready pods in the Curator format, and follow readiness, updates and deletion', async () => {
    await createServiceInstance(kc, ns, 'cart', {
      service: 'cart',
      selector: { matchLabels: { app: 'cart' } },
      port: 8080,
      weight: 4,
      tags: { zone: 'a' },
    });
    for (const [i, ip] of ['10.3.0.1', '10.3.0.2', '10.3.0.3'].entries()) {
      await createPod(kc, ns, `cart-${i}`, { labels: { app: 'cart' } });
      await setPodReady(kc, ns, `cart-${i}`, ip, i < 2);
    }
    const first = await eventually('two instances', async () => {
      const found = await instances('cart');
      return found.size === 2 ? found : undefined;
    });
    assert.deepEqual([...first.keys()], ['10.3.0.1:8080', '10.3.0.2:8080']);
    const value = JSON.parse(first.get('10.3.0.1:8080') ?? '{}') as { port: number; payload: { metadata: Record<string, string> } };
    assert.equal(value.port, 8080);
    assert.deepEqual(value.payload.metadata, { weight: '4', zone: 'a' });

    const si = await eventually('status with the session', async () => {
      const s = await getServiceInstance(kc, ns, 'cart');
      return s?.status?.registrations?.[0]?.entries === 2 ? s : undefined;
    });
    const node = await reader.getData(`${base}/${ns}/cart/10.3.0.1:8080`);
    const registry = await eventually('the Registry status to name the session', async () => {
      const r = await getRegistry(kc, registryName);
      return r?.status?.leases?.some((l) => l.namespace === ns) ? r : undefined;
    });
    assert.deepEqual(
      registry.status?.leases?.find((l) => l.namespace === ns),
      { namespace: ns, leaseID: node.stat.ephemeralOwner },
      'the Registry status names the session the entries hang on',
    );
    assert.equal(
      Object.hasOwn(si.status?.registrations?.[0] ?? {}, 'leaseID'),
      false,
      'the lease is not repeated on every ServiceInstance',
    );
    assert.equal(si.status?.conditions?.find((c) => c.type === 'Registered')?.status, 'True');
    const leader = operators[0];
    assert.ok(leader);
    assert.equal(await metricValue(leader, 'kube_registrar_registry_keepalives', `registry="${registryName}"`), 1, 'one session');

    await setPodReady(kc, ns, 'cart-2', '10.3.0.3', true);
    await setPodReady(kc, ns, 'cart-0', '10.3.0.1', false);
    await eventually('readiness to be followed', async () =>
      addresses(await instances('cart')).join() === '10.3.0.2,10.3.0.3' ? true : undefined,
    );
    await patchServiceInstance(kc, ns, 'cart', { weight: 9 });
    await eventually('the new weight', async () =>
      [...(await instances('cart')).values()].every((v) => v.includes('"weight":"9"')) ? true : undefined,
    );
    await deletePod(kc, ns, 'cart-1', 0);
    await eventually('the deleted pod to leave', async () => (addresses(await instances('cart')).join() === '10.3.0.3' ? true : undefined));
    await deleteServiceInstance(kc, ns, 'cart');
    await eventually('the ServiceInstance and its nodes to be gone', async () =>
      (await getServiceInstance(kc, ns, 'cart')) === undefined && (await instances('cart')).size === 0 ? true : undefined,
    );
  });

  test('a node deleted or edited by hand is repaired, and a foreign node beside ours is never touched', async () => {
    await createServiceInstance(kc, ns, 'search', {
      service: 'search',
      endpoints: [
        { address: '10.3.1.1', port: 80 },
        { address: '10.3.1.2', port: 80 },
      ],
    });
    await eventually('two instances', async () => ((await instances('search')).size === 2 ? true : undefined));
    const dir = `${base}/${ns}/search`;
    await admin.create(`${dir}/foreign-1`, Buffer.from('10.9.9.9:1'));
    await admin.remove(`${dir}/10.3.1.1:80`, -1);
    await admin.setData(`${dir}/10.3.1.2:80`, Buffer.from('garbage'), -1);
    await eventually('both entries repaired', async () => {
      const found = await instances('search');
      return found.get('10.3.1.1:80')?.includes('"address":"10.3.1.1"') === true &&
        found.get('10.3.1.2:80')?.includes('"address":"10.3.1.2"') === true
        ? true
        : undefined;
    });
    await deleteServiceInstance(kc, ns, 'search');
    await eventually('our nodes to be gone', async () => ((await instances('search')).size === 1 ? true : undefined));
    assert.equal((await reader.getData(`${dir}/foreign-1`)).data.toString(), '10.9.9.9:1', 'the foreign node is untouched');
  });

  test('a failover and a restart delete and rewrite nothing; a killed operator’s entries vanish within the session timeout', async () => {
    await createServiceInstance(kc, ns, 'pay', {
      service: 'pay',
      endpoints: [
        { address: '10.3.2.1', port: 80 },
        { address: '10.3.2.2', port: 80 },
      ],
    });
    await eventually('two instances', async () => ((await instances('pay')).size === 2 ? true : undefined));
    const paths = ['10.3.2.1:80', '10.3.2.2:80'].map((id) => `${base}/${ns}/pay/${id}`);
    const before = await Promise.all(paths.map((p) => reader.getData(p)));
    const watcher = await NodeWatcher.start();
    for (const p of paths) await watcher.watch(p);
    try {
      // A standby, then SIGKILL of the leader: the standby takes over and adopts the session.
      operators.push(await startOperator(operatorFlags));
      const first = operators.shift();
      assert.ok(first);
      await first.process.kill();
      const standby = operators[0];
      assert.ok(standby);
      await eventually(
        'the standby to lead',
        async () => ((await metricValue(standby, 'kube_registrar_leader')) === 1 ? true : undefined),
        60_000,
      );
      // Then a graceful restart of the new leader.
      await standby.process.stop();
      operators.shift();
      operators.push(await startOperator(operatorFlags));
      const current = operators[0];
      assert.ok(current);
      await eventually(
        'the restarted operator to lead',
        async () => ((await metricValue(current, 'kube_registrar_leader')) === 1 ? true : undefined),
        60_000,
      );
      // Past the session timeout since the first leader died: only adoption can have kept the nodes.
      await sleep((SESSION_TIMEOUT + 3) * 1000);
      await patchServiceInstance(kc, ns, 'pay', {
        endpoints: [
          { address: '10.3.2.1', port: 80 },
          { address: '10.3.2.2', port: 80 },
          { address: '10.3.2.3', port: 80 },
        ],
      });
      await eventually('the leader to reconcile a change', async () => ((await instances('pay')).size === 3 ? true : undefined));
      const afterwards = await Promise.all(paths.map((p) => reader.getData(p)));
      assert.deepEqual(
        afterwards.map((n) => n.stat.mzxid),
        before.map((n) => n.stat.mzxid),
        'the nodes were never rewritten',
      );
      assert.deepEqual(watcher.events, [], 'a watch saw no delete and no change');
    } finally {
      watcher.close();
    }

    const killed = operators.shift();
    assert.ok(killed);
    await killed.process.kill();
    await eventually(
      'the entries to vanish with the session',
      async () => ((await instances('pay')).size === 0 ? true : undefined),
      (SESSION_TIMEOUT + 20) * 1000,
    );
    operators.push(await startOperator(operatorFlags));
    await eventually('a new operator to write them again', async () => ((await instances('pay')).size === 3 ? true : undefined), 60_000);
  });

  test("with digest ACLs per environment, dev's credentials cannot write prod's path, and a dev ServiceInstance naming the prod Registry is refused", async () => {
    const prodCreds = { username: `prod-${sfx}`, password: 'prod-secret' };
    const devCreds = { username: `dev-${sfx}`, password: 'dev-secret' };
    const aclBase = `${base}-acl`;
    await admin.create(aclBase, Buffer.alloc(0)).catch(() => undefined);
    const world = { perms: 1, scheme: 'world', id: 'anyone' };
    await admin.create(`${aclBase}/prod`, Buffer.alloc(0), { acl: [digestAcl(`${prodCreds.username}:${prodCreds.password}`), world] });
    await admin.create(`${aclBase}/dev`, Buffer.alloc(0), { acl: [digestAcl(`${devCreds.username}:${devCreds.password}`), world] });
    const secretNs = `zsecrets-${sfx}`;
    await createNamespace(kc, secretNs);
    const core = kc.makeApiClient(CoreV1Api);
    await core.createNamespacedSecret({ namespace: secretNs, body: { metadata: { name: 'zk-dev' }, stringData: devCreds } });
    await core.createNamespacedSecret({ namespace: secretNs, body: { metadata: { name: 'zk-prod' }, stringData: prodCreds } });
    const devNs = `zdev-${sfx}`;
    const prodNs = `zprod-${sfx}`;
    await createNamespace(kc, devNs, { zenv: `dev-${sfx}` });
    await createNamespace(kc, prodNs, { zenv: `prod-${sfx}` });
    const registry = (env: 'dev' | 'prod', creds: string) => ({
      type: 'zookeeper',
      namespaceSelector: { matchLabels: { zenv: `${env}-${sfx}` } },
      namespace: env,
      zookeeper: {
        servers: bedEnv('ZOOKEEPER_CONNECT'),
        basePath: aclBase,
        sessionTimeoutSeconds: SESSION_TIMEOUT,
        credentialsSecretRef: { name: creds, namespace: secretNs },
      },
    });
    await createRegistry(kc, `zk-prod-${sfx}`, registry('prod', 'zk-prod'));
    // Misconfigured: prod's namespace reached with dev's credentials.
    await createRegistry(kc, `zk-prod-devcreds-${sfx}`, registry('prod', 'zk-dev'));

    await createServiceInstance(kc, prodNs, 'ledger', {
      service: 'ledger',
      registries: [`zk-prod-${sfx}`],
      endpoints: [{ address: '10.3.3.1', port: 80 }],
    });
    await eventually('prod to write its entry', async () => ((await instances('ledger', 'prod', aclBase)).size === 1 ? true : undefined));

    await createServiceInstance(kc, prodNs, 'audit', {
      service: 'audit',
      registries: [`zk-prod-devcreds-${sfx}`],
      endpoints: [{ address: '10.3.3.2', port: 80 }],
    });
    const refused = await eventually('the refusal in status', async () => {
      const s = await getServiceInstance(kc, prodNs, 'audit');
      const c = s?.status?.conditions?.find((x) => x.type === 'Registered');
      return c?.status === 'False' && c.reason === 'RegistrationFailed' ? c : undefined;
    });
    assert.match(refused.message, /NO_AUTH|permission/i);
    assert.ok(!refused.message.includes('dev-secret'), 'the password never appears in status');
    assert.equal((await instances('audit', 'prod', aclBase)).size, 0, 'nothing was written');

    await createServiceInstance(kc, devNs, 'ledger', {
      service: 'ledger',
      registries: [`zk-prod-${sfx}`],
      endpoints: [{ address: '10.3.3.3', port: 80 }],
    });
    const notAllowed = await eventually('the dev ServiceInstance refused', async () => {
      const s = await getServiceInstance(kc, devNs, 'ledger');
      const c = s?.status?.conditions?.find((x) => x.type === 'Registered');
      return c?.status === 'False' ? c : undefined;
    });
    assert.match(notAllowed.message, /namespaceSelector|not allowed|does not admit/i);
    assert.deepEqual([...(await instances('ledger', 'prod', aclBase)).keys()], ['10.3.3.1:80'], "prod's path holds prod's entry alone");
  });
});
