/**
 * `npm run demo`: the main job on an embedded default. Starts the test bed with its control plane
 * (controllers, scheduler, and kwok playing the kubelet of one node), installs the CRDs and the
 * sample resources of deploy/examples (two environments; etcd, Consul and ZooKeeper Registries; a
 * Deployment-backed, a static and a health-checked static ServiceInstance), serves the
 * health-checked endpoints on loopback (one healthy, one reporting a dependency down), runs the
 * operator, shows what it wrote to etcd, Consul and ZooKeeper and the health it sees, and how to
 * scale and restart the Deployment and watch the registries follow. Runs until Ctrl-C; `--once`
 * exits after showing the entries.
 */
import { execFile } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { CoreV1Api, KubeConfig } from '@kubernetes/client-node';
import { Etcd3 } from 'etcd3';
import { ZooKeeperSession } from '../src/registry/zookeeper/client.ts';
import { startBed } from '../testbed/bed.ts';
import { freePort, ManagedProcess } from '../testbed/processes.ts';
import { REPO_ROOT } from '../testbed/provision.ts';

const execFileAsync = promisify(execFile);
const once = process.argv.includes('--once');

async function kubectl(bin: string, kubeconfig: string, args: readonly string[]): Promise<string> {
  const { stdout } = await execFileAsync(bin, ['--kubeconfig', kubeconfig, ...args]);
  return stdout;
}

/** A health endpoint on loopback answering GET /healthz with `body` as JSON. */
async function serveHealth(body: Readonly<Record<string, string>>): Promise<Server> {
  const server = createServer((_request, response) => {
    response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return server;
}

async function main(): Promise<void> {
  const bed = await startBed({ controlPlane: true, log: (l) => console.log(l) });
  let operator: ManagedProcess | undefined;
  const health = [await serveHealth({ db: 'ok', redis: 'ok' }), await serveHealth({ db: 'ok', redis: 'timeout' })];
  const [up, down] = health.map((server) => (server.address() as AddressInfo).port);
  const stop = async (): Promise<void> => {
    await operator?.stop();
    for (const server of health) server.close();
    await bed.stop();
  };
  process.once('SIGINT', () => void stop().then(() => process.exit(0)));
  process.once('SIGTERM', () => void stop().then(() => process.exit(0)));
  try {
    const k = (args: readonly string[]): Promise<string> => kubectl(bed.toolchain.kubectl, bed.kubeconfig, args);
    console.log(
      `\ntest bed: kube-apiserver ${bed.versions.kubernetes}, etcd ${bed.versions.etcd}, Consul ${bed.versions.consul}, ZooKeeper ${bed.versions.zookeeper}`,
    );
    console.log(await k(['apply', '-f', join(REPO_ROOT, 'crds')]));
    await k(['wait', '--for=condition=Established', '--timeout=60s', 'crd/serviceinstances.registrar.dev', 'crd/registries.registrar.dev']);
    const examples = join(REPO_ROOT, 'deploy', 'examples');
    const registries = (await readFile(join(examples, 'registries.yaml'), 'utf8'))
      .replaceAll('${ETCD_ENDPOINTS}', bed.registryEtcd.clientUrl)
      .replaceAll('${CONSUL_HTTP_ADDR}', bed.consulAddr)
      .replaceAll('${ZOOKEEPER_CONNECT}', bed.zookeeper.connectString);
    const rendered = join(bed.dir, 'registries.yaml');
    await writeFile(rendered, registries);
    const healthChecked = join(bed.dir, 'health-checked.yaml');
    await writeFile(
      healthChecked,
      (await readFile(join(examples, 'health-checked.yaml'), 'utf8'))
        .replaceAll('${INVENTORY_PORT_UP}', String(up))
        .replaceAll('${INVENTORY_PORT_DOWN}', String(down)),
    );
    // The node the Deployment's pods run on: kwok plays its kubelet (it manages Nodes with this annotation).
    const kc = new KubeConfig();
    kc.loadFromFile(bed.kubeconfig);
    await kc.makeApiClient(CoreV1Api).createNode({
      body: { metadata: { name: 'demo-node', annotations: { 'kwok.x-k8s.io/node': 'fake' }, labels: { type: 'kwok' } } },
    });
    for (const f of [
      join(examples, 'namespaces.yaml'),
      rendered,
      join(examples, 'serviceinstances.yaml'),
      healthChecked,
      join(examples, 'deployment.yaml'),
    ])
      console.log((await k(['apply', '-f', f])).trim());

    const metricsPort = await freePort();
    const healthPort = await freePort();
    operator = new ManagedProcess(
      'kube-registrar',
      process.execPath,
      [
        join(REPO_ROOT, 'src', 'main.ts'),
        `--kubeconfig=${bed.kubeconfig}`,
        `--metrics-address=127.0.0.1:${metricsPort}`,
        `--health-address=127.0.0.1:${healthPort}`,
        '--resync-period=60',
      ],
      join(bed.dir, 'logs', 'kube-registrar.log'),
    );
    console.log(`\nkube-registrar running (logs: ${operator.logFile}, metrics: http://127.0.0.1:${metricsPort}/metrics)`);

    const etcd = new Etcd3({ hosts: bed.registryEtcd.clientUrl });
    try {
      let entries: Record<string, string> = {};
      for (let i = 0; i < 600; i++) {
        // The reserved _kube-registrar prefix holds lease bookkeeping, not endpoints.
        entries = Object.fromEntries(
          Object.entries(await etcd.getAll().prefix('/services/').strings()).filter(
            ([key]) => !key.startsWith('/services/_kube-registrar/'),
          ),
        );
        // Two pods (once kwok made them Ready), two static endpoints and the healthy inventory endpoint.
        if (Object.keys(entries).length >= 5) break;
        if (!operator.running) throw new Error(`operator exited:\n${await operator.logTail()}`);
        await sleep(100);
      }
      console.log('\nentries in the registry etcd:');
      for (const [key, value] of Object.entries(entries).sort()) console.log(`  ${key} = ${value}`);
    } finally {
      etcd.close();
    }
    const consulInstances = await readConsulService(bed.consulAddr, 'prod-user-service', 2, () => operator?.running === true);
    console.log('\ninstances in Consul (passing), service prod-user-service:');
    for (const instance of consulInstances) console.log(`  ${instance}`);
    const zookeeperNodes = await readZooKeeperServices(
      bed.zookeeper.connectString,
      '/services/prod',
      'orders',
      () => operator?.running === true,
    );
    console.log('\nentries in ZooKeeper (Curator format):');
    for (const [path, value] of zookeeperNodes) console.log(`  ${path} = ${value}`);
    // The endpoint reporting redis down is judged after failureThreshold probes (2 × 2 s).
    let inventoryHealth = '';
    for (let i = 0; i < 100 && !inventoryHealth.includes('"unhealthy":1'); i++) {
      inventoryHealth = await k(['get', 'serviceinstance', 'inventory', '-n', 'dev', '-o', 'jsonpath={.status.health}']);
      if (!inventoryHealth.includes('"unhealthy":1')) await sleep(200);
    }
    console.log('\nstatus:');
    console.log(await k(['get', 'serviceinstances', '-A']));
    console.log(`health of dev/inventory (127.0.0.1:${down} reports redis down, so it is not registered):\n  ${inventoryHealth}\n`);
    const kubectlCmd = `${bed.toolchain.kubectl} --kubeconfig=${bed.kubeconfig}`;
    console.log(
      [
        'see them yourself:',
        `  ${bed.toolchain.etcdctl} --endpoints=${bed.registryEtcd.clientUrl} get --prefix /services/`,
        `  curl -s '${bed.consulAddr}/v1/health/service/prod-user-service?passing'`,
        `  ${kubectlCmd} get si -A`,
        '',
        'change the Deployment and watch the registries follow (in another terminal):',
        `  ${bed.toolchain.etcdctl} --endpoints=${bed.registryEtcd.clientUrl} watch --prefix /services/prod/user-service/`,
        `  ${kubectlCmd} -n prod scale deployment user --replicas=4       # two more entries once their pods are Ready`,
        `  ${kubectlCmd} -n prod rollout restart deployment user          # one new pod in, one old out, never fewer than 2`,
        `  ${kubectlCmd} -n prod get pods -o wide -w`,
        '',
      ].join('\n'),
    );
    if (once) {
      await stop();
      return;
    }
    console.log('Ctrl-C stops the operator and the bed (entries then expire within the lease TTL).');
    await new Promise(() => undefined);
  } catch (err: unknown) {
    await stop();
    throw err;
  }
}

/**
 * `address:port` of the passing instances of `service` in Consul's health API, once there are at
 * least `count` (waits up to 60 s while `alive()`).
 */
async function readConsulService(consul: string, service: string, count: number, alive: () => boolean): Promise<string[]> {
  let instances: string[] = [];
  for (let i = 0; i < 600 && alive(); i++) {
    const response = await fetch(`${consul}/v1/health/service/${service}?passing=true`);
    const entries = (await response.json()) as { Service: { Address: string; Port: number } }[];
    instances = entries.map((e) => `${e.Service.Address}:${e.Service.Port}`).sort();
    if (instances.length >= count) return instances;
    await sleep(100);
  }
  throw new Error(`${instances.length} passing instance(s) of ${service} in Consul, expected ${count}`);
}

/**
 * The nodes under `<base>/<service>` and their data, once there is at least one (waits up to 30 s
 * while `alive()`), read as a plain ZooKeeper client would.
 */
async function readZooKeeperServices(
  connectString: string,
  base: string,
  service: string,
  alive: () => boolean,
): Promise<[string, string][]> {
  const session = await ZooKeeperSession.connect({ connectString, sessionTimeoutMs: 10_000, callTimeoutMs: 10_000 });
  try {
    const dir = `${base}/${service}`;
    for (let i = 0; i < 300 && alive(); i++) {
      const children = await session.getChildren(dir).catch(() => []);
      if (children.length > 0) {
        const nodes = await Promise.all(
          children.sort().map(async (c) => [`${dir}/${c}`, (await session.getData(`${dir}/${c}`)).data.toString()] as [string, string]),
        );
        return nodes;
      }
      await sleep(100);
    }
    throw new Error(`no entry appeared under ${dir} in ZooKeeper`);
  } finally {
    await session.close();
  }
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
