/**
 * Isolation with real credentials, and secrets that never leak. An etcd of this file's own with
 * authentication on (a user and a role per environment, limited to that environment's keys) and a
 * Consul agent with ACLs on (a token per environment, limited to its service-name prefix); the
 * operator runs against the shared bed's apiserver and reads the credentials from Secrets.
 *
 * What a user relies on: dev's credentials cannot write prod's keys or services, whatever a
 * Registry says; a dev ServiceInstance naming the prod Registry is refused and nothing is written;
 * a scan finds no entry of one environment in the other's space; and no password or token ever
 * shows up in the operator's logs, in events, or in the status of any object.
 *
 * The etcd grants an environment needs. Simplest, a Registry prefix per environment (e.g.
 * `/envs/dev`): one grant, readwrite on the prefix `/envs/dev/`, covers the entries and the
 * operator's bookkeeping under `/envs/dev/_kube-registrar/`. With one prefix `/services` shared by
 * all environments, registry namespace `dev` and cluster id `<cluster>`:
 *   readwrite, prefix  /services/dev/                                 the entries
 *   readwrite, key     /services/_kube-registrar/leases/<cluster>/dev the id of the lease they hang on
 *   readwrite, prefix  /services/_kube-registrar/owners/dev/          owner index (grpc and hostport formats)
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { CoreV1Api, CustomObjectsApi, type KubeConfig } from '@kubernetes/client-node';
import { Etcd3 } from 'etcd3';
import { startAclConsulAgent, type AclConsulAgent } from '../support/consul-acl.ts';
import { adminKubeConfig, bedEnv, uniqueSuffix } from '../support/env.ts';
import {
  agentServices,
  converge,
  crashLines,
  deleteRegistry,
  etcdKeys,
  eventsIn,
  FaultTally,
  findSecrets,
  operatorAlive,
  passingInstances,
  startOperatorOn,
  startOwnEtcd,
  waitFor,
  type FaultOperator,
  type OwnEtcd,
} from '../support/faults.ts';
import {
  createNamespace,
  createRegistry,
  createServiceInstance,
  deleteServiceInstance,
  getServiceInstance,
  installCrds,
} from '../support/kube.ts';

const sfx = uniqueSuffix();
const clusterId = `iso-${sfx}`;
const devNs = `dev-${sfx}`;
const prodNs = `prod-${sfx}`;
const credsNs = `creds-${sfx}`;
const password = (): string => randomBytes(12).toString('hex');
const passwords = { root: password(), dev: password(), prod: password(), wrong: password(), envdev: password() };
const SETTLE_MS = 60_000;

const tally = new FaultTally('faults-isolation');
let kc: KubeConfig;
let ownEtcd: OwnEtcd | undefined;
let consul: AclConsulAgent | undefined;
let tokens: { dev: string; prod: string } = { dev: '', prod: '' };
let root: Etcd3;
let operator: FaultOperator | undefined;
const registryNames: string[] = [];

async function secret(name: string, data: Record<string, string>): Promise<void> {
  await kc.makeApiClient(CoreV1Api).createNamespacedSecret({ namespace: credsNs, body: { metadata: { name }, stringData: data } });
}

async function registry(name: string, spec: Record<string, unknown>): Promise<string> {
  const full = `iso-${name}-${sfx}`;
  await createRegistry(kc, full, spec);
  registryNames.push(full);
  return full;
}

function etcdRegistry(
  env: 'dev' | 'prod',
  registryNamespace: string,
  secretName: string,
  extra: Record<string, unknown> = {},
): Record<string, unknown> {
  return {
    type: 'etcd',
    namespaceSelector: { matchLabels: { env: `${env}-${sfx}` } },
    namespace: registryNamespace,
    leaseTTLSeconds: 10,
    ...extra,
    etcd: { endpoints: [ownEtcd?.clientUrl], prefix: '/services', credentialsSecretRef: { name: secretName, namespace: credsNs } },
  };
}

function consulRegistry(
  env: 'dev' | 'prod',
  registryNamespace: string,
  secretName: string,
  extra: Record<string, unknown> = {},
): Record<string, unknown> {
  return {
    type: 'consul',
    namespaceSelector: { matchLabels: { env: `${env}-${sfx}` } },
    namespace: registryNamespace,
    leaseTTLSeconds: 10,
    ...extra,
    consul: { address: consul?.address, serviceName: '{namespace}-{service}', tokenSecretRef: { name: secretName, namespace: credsNs } },
  };
}

async function condition(ns: string, name: string, type: string): Promise<{ status: string; reason: string; message: string } | undefined> {
  return (await getServiceInstance(kc, ns, name))?.status?.conditions?.find((c) => c.type === type);
}

/** Every etcd entry (not bookkeeping) under `/services/<env>/`, with the namespace of its owner. */
async function entriesOf(env: string): Promise<{ key: string; ownerNamespace: string }[]> {
  return (await etcdKeys(root, `/services/${env}/`)).map((kv) => ({
    key: kv.key,
    ownerNamespace: (JSON.parse(kv.value) as { owner: { namespace: string } }).owner.namespace,
  }));
}

describe('isolation with real credentials', () => {
  before(async () => {
    kc = adminKubeConfig();
    await installCrds(kc);
    ownEtcd = await startOwnEtcd();
    const own = ownEtcd;
    const ctl = (args: readonly string[]): Promise<string> => own.ctl(args);
    await ctl(['user', 'add', `root:${passwords.root}`]);
    await ctl(['user', 'grant-role', 'root', 'root']);
    for (const env of ['dev', 'prod'] as const) {
      await ctl(['role', 'add', env]);
      await ctl(['role', 'grant-permission', '--prefix=true', env, 'readwrite', `/services/${env}/`]);
      await ctl(['role', 'grant-permission', env, 'readwrite', `/services/_kube-registrar/leases/${clusterId}/${env}`]);
      await ctl(['role', 'grant-permission', '--prefix=true', env, 'readwrite', `/services/_kube-registrar/owners/${env}/`]);
      await ctl(['user', 'add', `${env}:${passwords[env]}`]);
      await ctl(['user', 'grant-role', env, env]);
    }
    // The simplest layout: one Registry prefix per environment, one grant.
    await ctl(['role', 'add', 'envdev']);
    await ctl(['role', 'grant-permission', '--prefix=true', 'envdev', 'readwrite', '/envs/dev/']);
    await ctl(['user', 'add', `envdev:${passwords.envdev}`]);
    await ctl(['user', 'grant-role', 'envdev', 'envdev']);
    await ctl(['auth', 'enable']);
    root = new Etcd3({ hosts: ownEtcd.clientUrl, auth: { username: 'root', password: passwords.root } });

    consul = await startAclConsulAgent();
    const rules = (env: string): string =>
      `service_prefix "${env}-" { policy = "write" }\nnode_prefix "" { policy = "read" }\nagent_prefix "" { policy = "read" }`;
    tokens = { dev: await consul.createToken(rules('dev')), prod: await consul.createToken(rules('prod')) };

    await createNamespace(kc, devNs, { env: devNs });
    await createNamespace(kc, prodNs, { env: prodNs });
    await createNamespace(kc, credsNs);
    await secret('etcd-dev', { username: 'dev', password: passwords.dev });
    await secret('etcd-prod', { username: 'prod', password: passwords.prod });
    await secret('etcd-wrong', { username: 'dev', password: passwords.wrong });
    await secret('etcd-envdev', { username: 'envdev', password: passwords.envdev });
    await secret('consul-dev', { token: tokens.dev });
    await secret('consul-prod', { token: tokens.prod });
    await registry('etcd-dev', { ...etcdRegistry('dev', 'dev', 'etcd-dev'), default: true });
    await registry('etcd-prod', { ...etcdRegistry('prod', 'prod', 'etcd-prod'), default: true });
    await registry('consul-dev', { ...consulRegistry('dev', 'dev', 'consul-dev'), default: true });
    await registry('consul-prod', { ...consulRegistry('prod', 'prod', 'consul-prod'), default: true });
    const envdev = etcdRegistry('dev', '{namespace}', 'etcd-envdev');
    await registry('etcd-envdev', { ...envdev, etcd: { ...(envdev['etcd'] as object), prefix: '/envs/dev' } });
    operator = await startOperatorOn({
      kubeconfig: bedEnv('KUBECONFIG'),
      flags: [`--cluster-id=${clusterId}`, `--watch-namespaces=${devNs},${prodNs}`, '--resync-period=3', '--registry-timeout=5'],
    });
  });

  after(async () => {
    console.log(tally.line());
    await operator?.process.stop();
    for (const name of registryNames) await deleteRegistry(kc, name).catch(() => undefined);
    root?.close();
    await ownEtcd?.close();
    await consul?.stop();
  });

  test("dev's etcd user and Consul token can write dev's keys and services, and not prod's", async () => {
    assert.ok(ownEtcd && consul);
    const dev = `dev:${passwords.dev}`;
    await ownEtcd.ctl(['put', '/services/dev/probe/direct', 'x'], dev);
    await ownEtcd.ctl(['del', '/services/dev/probe/direct'], dev);
    for (const args of [
      ['put', '/services/prod/probe/direct', 'x'],
      ['put', '/services/_kube-registrar/leases/other/prod', 'x'],
      ['get', '--prefix', '/services/prod/'],
      ['del', '--prefix', '/services/'],
    ]) {
      tally.badInputs++;
      await assert.rejects(ownEtcd.ctl(args, dev), /permission denied/, `dev may not ${args.join(' ')}`);
    }
    const consulAddr = consul.address;
    const register = async (token: string, name: string): Promise<number> =>
      (
        await fetch(`${consulAddr}/v1/agent/service/register`, {
          method: 'PUT',
          headers: { 'X-Consul-Token': token },
          body: JSON.stringify({ ID: `probe-${name}`, Name: name, Port: 1 }),
        })
      ).status;
    assert.equal(await register(tokens.dev, 'dev-probe'), 200);
    tally.badInputs++;
    assert.equal(await register(tokens.dev, 'prod-probe'), 403, "dev's token cannot register a prod service");
    await fetch(`${consul.address}/v1/agent/service/deregister/probe-dev-probe`, {
      method: 'PUT',
      headers: { 'X-Consul-Token': tokens.dev },
    });
  });

  test('through the operator each environment writes only its own space, and a dev ServiceInstance naming the prod Registry is refused', async () => {
    assert.ok(consul && operator);
    await createServiceInstance(kc, devNs, 'api', {
      service: 'api',
      endpoints: [
        { address: '10.80.0.1', port: 80 },
        { address: '10.80.0.2', port: 80 },
      ],
    });
    await createServiceInstance(kc, prodNs, 'api', { service: 'api', endpoints: [{ address: '10.81.0.1', port: 80 }] });
    for (const [ns, entries] of [
      [devNs, 2],
      [prodNs, 1],
    ] as const) {
      const cond = await waitFor(
        `${ns}/api to be Ready`,
        async () => {
          const c = await condition(ns, 'api', 'Ready');
          return c?.status === 'True' ? c : undefined;
        },
        SETTLE_MS,
      ).catch(async (err: unknown) => {
        throw new Error(`${ns}/api: ${JSON.stringify(await condition(ns, 'api', 'Ready'))}`, { cause: err });
      });
      assert.match(cond.message, new RegExp(`${entries}/${entries}`));
    }
    const devKeys = (await entriesOf('dev')).map((e) => e.key).sort();
    assert.deepEqual(devKeys, ['/services/dev/api/10.80.0.1:80', '/services/dev/api/10.80.0.2:80']);
    assert.deepEqual(
      (await entriesOf('prod')).map((e) => e.key),
      ['/services/prod/api/10.81.0.1:80'],
    );
    tally.checked(3);
    // The agent syncs to Consul's catalog (what ?passing=true reads) moments after it accepted a registration.
    const { address, managementToken: token } = consul;
    await converge(
      tally,
      'dev-api to pass in Consul',
      () => passingInstances(address, 'dev-api', token),
      ['10.80.0.1:80', '10.80.0.2:80'],
      SETTLE_MS,
    );
    await converge(tally, 'prod-api to pass in Consul', () => passingInstances(address, 'prod-api', token), ['10.81.0.1:80'], SETTLE_MS);

    // A prefix per environment needs a single grant, bookkeeping included.
    await createServiceInstance(kc, devNs, 'api2', {
      service: 'api2',
      registries: [`iso-etcd-envdev-${sfx}`],
      endpoints: [{ address: '10.80.1.1', port: 80 }],
    });
    await waitFor(
      'dev-ns/api2 to be Ready',
      async () => ((await condition(devNs, 'api2', 'Ready'))?.status === 'True' ? true : undefined),
      SETTLE_MS,
    ).catch(async (err: unknown) => {
      throw new Error(`api2: ${JSON.stringify(await condition(devNs, 'api2', 'Ready'))}`, { cause: err });
    });
    assert.deepEqual((await etcdKeys(root, '/envs/')).map((kv) => kv.key).sort(), [
      `/envs/dev/_kube-registrar/leases/${clusterId}/${devNs}`,
      `/envs/dev/${devNs}/api2/10.80.1.1:80`,
    ]);
    tally.checked(1);

    // A dev ServiceInstance naming the prod Registries: refused, never written.
    tally.badInputs++;
    await createServiceInstance(kc, devNs, 'sneaky', {
      service: 'sneaky',
      registries: [`iso-etcd-prod-${sfx}`, `iso-consul-prod-${sfx}`],
      endpoints: [{ address: '10.80.9.9', port: 80 }],
    });
    const refused = await waitFor(
      'the refusal',
      async () => {
        const c = await condition(devNs, 'sneaky', 'Registered');
        return c?.status === 'False' ? c : undefined;
      },
      SETTLE_MS,
    );
    assert.equal(refused.reason, 'NamespaceNotAdmitted');
    assert.match(refused.message, /does not admit namespace/);
  });

  test("a Registry that points dev's credentials at prod's space is stopped by etcd and Consul, and says so", async () => {
    assert.ok(consul && operator);
    // Misconfigured by an administrator: admits dev's namespace but writes registry namespace prod.
    await registry('etcd-leaky', etcdRegistry('dev', 'prod', 'etcd-dev'));
    await registry('consul-leaky', consulRegistry('dev', 'prod', 'consul-dev'));
    await registry('etcd-wrongpw', etcdRegistry('dev', 'dev', 'etcd-wrong'));
    for (const [name, reg, pattern] of [
      ['leak-etcd', `iso-etcd-leaky-${sfx}`, /permission denied/i],
      ['leak-consul', `iso-consul-leaky-${sfx}`, /Permission denied|403/],
      ['wrong-pw', `iso-etcd-wrongpw-${sfx}`, /authentication failed|invalid auth|password/i],
    ] as const) {
      tally.badInputs++;
      await createServiceInstance(kc, devNs, name, { service: name, registries: [reg], endpoints: [{ address: '10.80.8.8', port: 80 }] });
      const failed = await waitFor(
        `${name} to report the refusal`,
        async () => {
          const c = await condition(devNs, name, 'Registered');
          return c?.status === 'False' && c.reason === 'RegistrationFailed' ? c : undefined;
        },
        SETTLE_MS,
      ).catch(async (err: unknown) => {
        throw new Error(`${name}: ${JSON.stringify(await condition(devNs, name, 'Registered'))}`, { cause: err });
      });
      assert.match(failed.message, pattern, `${name}: ${failed.message}`);
    }
    // The Registries say what is wrong too.
    const custom = kc.makeApiClient(CustomObjectsApi);
    const wrong = await waitFor(
      'the Registry with a wrong password to be not Ready',
      async () => {
        const r = (await custom.getClusterCustomObject({
          group: 'registrar.dev',
          version: 'v1alpha1',
          plural: 'registries',
          name: `iso-etcd-wrongpw-${sfx}`,
        })) as { status?: { conditions?: { type: string; status: string; reason: string }[] } };
        return r.status?.conditions?.find((c) => c.type === 'Ready' && c.status === 'False');
      },
      SETTLE_MS,
    );
    assert.equal(wrong.reason, 'AuthenticationFailed');

    // Scan: every entry of each space belongs to that environment's namespace.
    const dev = await entriesOf('dev');
    const prod = await entriesOf('prod');
    assert.deepEqual(
      dev.filter((e) => e.ownerNamespace !== devNs),
      [],
      'nothing but dev in dev',
    );
    assert.deepEqual(
      prod.filter((e) => e.ownerNamespace !== prodNs),
      [],
      'nothing but prod in prod',
    );
    const services = await agentServices(consul.address, consul.managementToken);
    const crossed = services.filter(
      (s) =>
        (s.name.startsWith('prod-') && s.meta['kr-k8s-namespace'] === devNs) ||
        (s.name.startsWith('dev-') && s.meta['kr-k8s-namespace'] === prodNs),
    );
    assert.deepEqual(crossed, [], "no service of one environment under the other's names");
    tally.checked(dev.length + prod.length + services.length);

    // Deleting them clears what little they hold and lets them go.
    for (const name of ['sneaky', 'leak-etcd', 'leak-consul', 'wrong-pw'])
      await deleteServiceInstance(kc, devNs, name).catch((err: unknown) => assert.equal((err as { code?: number }).code, 404));
    for (const name of ['etcd-leaky', 'consul-leaky', 'etcd-wrongpw']) await deleteRegistry(kc, `iso-${name}-${sfx}`);
    await waitFor(
      'the refused ServiceInstances to go',
      async () => {
        for (const name of ['sneaky', 'leak-etcd', 'leak-consul', 'wrong-pw'])
          if (await getServiceInstance(kc, devNs, name)) return undefined;
        return true;
      },
      SETTLE_MS,
    );
    assert.ok(await operatorAlive(operator));
  });

  test('no password or token appears in the logs, in events, or in the status of any object', async () => {
    assert.ok(operator);
    const haystacks: Record<string, string> = { 'operator log': await operator.log() };
    for (const ns of [devNs, prodNs, credsNs, 'default']) haystacks[`events in ${ns}`] = JSON.stringify(await eventsIn(kc, ns));
    const custom = kc.makeApiClient(CustomObjectsApi);
    for (const ns of [devNs, prodNs]) {
      const list = (await custom.listNamespacedCustomObject({
        group: 'registrar.dev',
        version: 'v1alpha1',
        plural: 'serviceinstances',
        namespace: ns,
      })) as { items: { metadata: { name: string }; status?: unknown }[] };
      for (const si of list.items) haystacks[`status of ServiceInstance ${ns}/${si.metadata.name}`] = JSON.stringify(si.status ?? {});
    }
    const regs = (await custom.listClusterCustomObject({ group: 'registrar.dev', version: 'v1alpha1', plural: 'registries' })) as {
      items: { metadata: { name: string }; status?: unknown }[];
    };
    for (const r of regs.items) haystacks[`status of Registry ${r.metadata.name}`] = JSON.stringify(r.status ?? {});
    const secrets = [
      passwords.root,
      passwords.dev,
      passwords.prod,
      passwords.wrong,
      passwords.envdev,
      tokens.dev,
      tokens.prod,
      consul?.managementToken ?? '',
    ];
    assert.ok(haystacks['operator log'] && haystacks['operator log'].length > 10_000, 'the log has something to scan');
    assert.deepEqual(findSecrets(haystacks, secrets), []);
    assert.deepEqual(crashLines(haystacks['operator log'] ?? ''), []);
  });
});
