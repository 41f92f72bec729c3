/**
 * Hostile input on the shared bed: hundreds of generated ServiceInstances and Registries with
 * malformed values, and with extreme values the schema accepts (huge tag maps, unicode, 1,000
 * endpoints, duplicates, unknown port names, templates that render to overlong or odd names,
 * separators and traversal in names, tags, metadata and addresses).
 *
 * What a user relies on: every object is either refused at admission with a message, or accepted
 * and then registered exactly as written or marked not Ready with a message that says why; the
 * operator never crashes; and a scan of all of etcd and of the Consul agent afterwards finds no key
 * and no service of this operator outside the registry namespace its writer may write to, and,
 * once everything is deleted, nothing but the lease bookkeeping.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { CoreV1Api, CustomObjectsApi, type KubeConfig } from '@kubernetes/client-node';
import { Etcd3 } from 'etcd3';
import { adminKubeConfig, bedEnv, uniqueSuffix } from '../support/env.ts';
import {
  agentServices,
  countServiceInstances,
  crashLines,
  deleteRegistry,
  etcdKeys,
  FaultTally,
  operatorAlive,
  startOperatorOn,
  waitFor,
  waitForResyncs,
  type FaultOperator,
} from '../support/faults.ts';
import {
  createNamespace,
  createPod,
  createRegistry,
  createServiceInstance,
  deleteServiceInstance,
  installCrds,
  setPodReady,
  type ServiceInstanceView,
} from '../support/kube.ts';

const sfx = uniqueSuffix();
const clusterId = `hostile-${sfx}`;
const root = `/hostile-${sfx}`;
const shortNs = `h1-${sfx}`;
/** The longest namespace name Kubernetes allows, so that templates over it overflow. */
const longNs = `h2-${sfx}-`.padEnd(63, 'n');
const namespaces = [shortNs, longNs];
const mainEtcd = `hostile-etcd-${sfx}`;
const mainConsul = `hostile-consul-${sfx}`;
const SETTLE_MS = 240_000;

const tally = new FaultTally('faults-hostile-input');
let kc: KubeConfig;
let etcd: Etcd3;
let operator: FaultOperator | undefined;

// --- generated input ----------------------------------------------------------------------------

/** A Registry spec the test creates, with what its namespace template renders to per namespace. */
interface RegistryCase {
  readonly name: string;
  readonly spec: Record<string, unknown>;
  /** Expected outcome at admission. */
  readonly admitted: boolean;
  /** Admitted, but the operator cannot reach or even build its backend. */
  readonly broken?: boolean;
}

/** A ServiceInstance the test creates, and what must become of it. */
interface InstanceCase {
  readonly name: string;
  readonly namespace: string;
  readonly spec: Record<string, unknown>;
  readonly admitted: boolean;
  /** For admitted ones: Ready (registered as written), or the reason it is not Ready. */
  readonly outcome?: 'Ready' | 'NotReady';
  /** Part of the not-Ready message, when the test knows it. */
  readonly messageIncludes?: RegExp;
}

const unicode = [
  'ünïcödé',
  '日本語のタグ',
  'emoji 🚀🔥',
  'rtl \u202etxt',
  'zero\u200bwidth',
  'new\nline',
  'tab\there',
  'nul\u0000byte',
  'a=b,c=d',
  '../../etc/passwd',
  '/leading/slash',
  'back\\slash',
  '"quoted"',
  '{"json":true}',
  '%2F..%2F',
  '',
];

function repeat(s: string, n: number): string {
  return Array.from({ length: n }, () => s).join('');
}

function tagsOf(values: readonly string[]): Record<string, string> {
  return Object.fromEntries(values.map((v, i) => [`t${i}`, v]));
}

function registryCases(): RegistryCase[] {
  const etcdEndpoints = [bedEnv('ETCD_ENDPOINTS')];
  const consul = bedEnv('CONSUL_HTTP_ADDR');
  const sel = { matchLabels: { hostile: sfx } };
  const cases: RegistryCase[] = [];
  const add = (name: string, spec: Record<string, unknown>, admitted: boolean, broken = false): void => {
    cases.push({
      name: `hx-${cases.length}-${sfx}${name ? `-${name}` : ''}`,
      spec: { namespaceSelector: sel, ...spec },
      admitted,
      ...(broken ? { broken } : {}),
    });
  };
  const etcdReg = (etcdSpec: Record<string, unknown>, rest: Record<string, unknown> = {}): Record<string, unknown> => ({
    type: 'etcd',
    leaseTTLSeconds: 30,
    ...rest,
    etcd: { endpoints: etcdEndpoints, ...etcdSpec },
  });
  const consulReg = (consulSpec: Record<string, unknown>, rest: Record<string, unknown> = {}): Record<string, unknown> => ({
    type: 'consul',
    leaseTTLSeconds: 30,
    ...rest,
    consul: { address: consul, ...consulSpec },
  });
  let n = 0;
  const prefix = (): string => `${root}/r${n++}`;

  // Schema-valid, extreme or odd: admitted; each SI naming one must register or say why not.
  for (const ns of [
    repeat('{namespace}', 11),
    '-',
    '--',
    '0',
    '-{namespace}-',
    '{namespace}{namespace}',
    'leases',
    'owners',
    '{namespace}-_',
    'x'.padEnd(128, 'x'),
  ]) {
    add('', etcdReg({ prefix: prefix() }, { namespace: ns }), !ns.includes('_'));
  }
  for (const p of [
    `${root}/...`,
    `${root}/main/_kube-registrar`,
    `${root}/${'d/'.repeat(60)}deep`,
    `${root}/.hidden`,
    `${root}/-`,
    `${root}/_`,
    `${root}/${'p'.repeat(200)}`,
    `${root}/main/${shortNs}`,
  ]) {
    add('', etcdReg({ prefix: p }), true);
  }
  for (const format of ['grpc', 'hostport']) add(format, etcdReg({ prefix: prefix(), format }), true);
  add('ttl5', etcdReg({ prefix: prefix() }, { leaseTTLSeconds: 5 }), true);
  add('ttl3600', etcdReg({ prefix: prefix() }, { leaseTTLSeconds: 3600 }), true);
  add('upsert', etcdReg({ prefix: prefix() }, { policy: 'upsert-only' }), true);
  add('dry', etcdReg({ prefix: prefix() }, { dryRun: true }), true);
  add('unreachable', etcdReg({ prefix: prefix(), endpoints: ['http://127.0.0.1:1'] }), true, true);
  add('unreachable6', etcdReg({ prefix: prefix(), endpoints: ['http://[::1]:1', 'https://localhost:1'] }), true, true);
  add('nosecret', etcdReg({ prefix: prefix(), credentialsSecretRef: { name: 'does-not-exist', namespace: shortNs } }), true, true);
  add('badsecret', etcdReg({ prefix: prefix(), credentialsSecretRef: { name: 'garbage', namespace: shortNs } }), true, true);
  // Fourteen {service}: even the heartbeat's name ("kube-registrar-heartbeat" fourteen times) is too
  // long, so nothing can be written through it, nor cleaned up: it counts as broken.
  add('', consulReg({ serviceName: repeat('{service}', 14) }), true, true);
  for (const sn of ['{namespace}{service}', '-{service}-', '{service}-{namespace}-{service}', `${'s'.repeat(119)}{service}`]) {
    add('', consulReg({ serviceName: sn }), true);
  }
  add('ent', consulReg({ namespace: '{namespace}', serviceName: `{namespace}-{service}-ent` }), true, true);
  add('dc', consulReg({ datacenter: 'dc-nope', serviceName: '{namespace}-{service}-dc' }), true, true);
  add('cunreach', consulReg({ address: 'http://127.0.0.1:1', serviceName: '{service}-unreach' }), true, true);
  add('notoken', consulReg({ tokenSecretRef: { name: 'garbage', namespace: shortNs }, serviceName: '{service}-notoken' }), true, true);

  // Malformed: refused at admission.
  for (const ns of ['a/b', '..', '.', 'a.b', '{service}', '_x', '{namespace', 'UPPER', '', 'x'.repeat(129), '{namespace}/..', 'ünï'])
    add('', etcdReg({ prefix: prefix() }, { namespace: ns }), false);
  for (const p of ['services/', '/services/', '//x', '/a/../b', '/a/./b', '/a b', '/ünï', '/a/..', '/', `/${'p'.repeat(256)}`, '/a\nb'])
    add('', etcdReg({ prefix: p }), false);
  for (const sn of ['{namespace}', 'static', '{service}/x', '{namespace}.{service}', 'UP{service}', '{service} x', '{svc}', ''])
    add('', consulReg({ serviceName: sn }), false);
  for (const e of ['ftp://x:1', 'http://x:1/path', 'http://user:pw@x:1', 'x:2379', 'http://', 'http://a b:1'])
    add('', etcdReg({ prefix: prefix(), endpoints: [e] }), false);
  for (const ttl of [0, 4, 3601, -1]) add('', etcdReg({ prefix: prefix() }, { leaseTTLSeconds: ttl }), false);
  add('', { type: 'etcd', consul: { address: consul } }, false);
  add('', { type: 'consul', etcd: { endpoints: etcdEndpoints } }, false);
  add('', { type: 'zookeeper' }, false);
  const zkReg = (zookeeper: Record<string, unknown>): Record<string, unknown> => ({
    type: 'zookeeper',
    zookeeper: { servers: bedEnv('ZOOKEEPER_CONNECT'), basePath: `${root}-zk`, ...zookeeper },
  });
  for (const servers of ['zk://127.0.0.1:2181', '127.0.0.1', '127.0.0.1:2181,', '127.0.0.1:2181/../x', 'a b:1', ''])
    add('', zkReg({ servers }), false);
  for (const basePath of ['/zookeeper', '/zookeeper/x', 'services', '/a/../b', '/a/', '/', '/a\nb', '/ünï'])
    add('', zkReg({ basePath }), false);
  add('', zkReg({ format: 'grpc' }), false);
  for (const sessionTimeoutSeconds of [0, 1, 601, -5]) add('', zkReg({ sessionTimeoutSeconds }), false);
  add('', { type: 'zookeeper', etcd: { endpoints: etcdEndpoints }, zookeeper: { servers: '127.0.0.1:2181' } }, false);
  add('zkunreach', zkReg({ servers: '127.0.0.1:1' }), true, true);
  add('zknosecret', zkReg({ credentialsSecretRef: { name: 'does-not-exist', namespace: shortNs } }), true, true);
  add('', consulReg({ address: 'consul:8500' }), false);
  add('', consulReg({ namespace: '../x' }), false);
  add('', etcdReg({ prefix: prefix(), format: 'xml' }), false);
  add('', etcdReg({ prefix: prefix() }, { policy: 'delete-everything' }), false);
  return cases;
}

function staticEndpoints(count: number, port = 8080): { address: string; port: number }[] {
  return Array.from({ length: count }, (_, i) => ({
    address: `10.${60 + Math.floor(i / 65536)}.${Math.floor(i / 256) % 256}.${i % 256}`,
    port,
  }));
}

function instanceCases(hostileRegistries: readonly RegistryCase[]): InstanceCase[] {
  const cases: InstanceCase[] = [];
  const add = (
    namespace: string,
    spec: Record<string, unknown>,
    admitted: boolean,
    outcome?: InstanceCase['outcome'],
    messageIncludes?: RegExp,
    name?: string,
  ): void => {
    cases.push({
      name: name ?? `si-${cases.length}`,
      namespace,
      spec,
      admitted,
      ...(outcome ? { outcome } : {}),
      ...(messageIncludes ? { messageIncludes } : {}),
    });
  };
  const ep = (address: string, port = 80): { address: string; port: number } => ({ address, port });
  let svc = 0;
  const service = (): string => `svc-${svc++}`;

  // Valid and registered as written, into the two default Registries.
  add(shortNs, { service: service(), endpoints: staticEndpoints(1000) }, true, 'Ready');
  for (const ns of namespaces) {
    add(ns, { service: service(), endpoints: [ep('10.70.0.1', 1), ep('10.70.0.2', 65535)], weight: 1000 }, true, 'Ready');
    add(ns, { service: service(), endpoints: [ep('10.70.0.3'), { address: '10.70.0.4', port: 80, weight: 0 }] }, true, 'Ready');
    add(ns, { service: 'a', endpoints: [ep('10.70.1.1')] }, true, 'Ready');
    add(ns, { service: '0', endpoints: [ep('10.70.1.2')] }, true, 'Ready');
    add(ns, { service: 's'.repeat(63), endpoints: [ep('10.70.1.3')] }, true, 'Ready');
    add(ns, { service: 'kube-registrar-heartbeat', endpoints: [ep('10.70.1.4')] }, true, 'Ready');
    add(ns, { service: service(), endpoints: [ep('2001:db8::1'), ep('::1'), ep('fe80::1')] }, true, 'Ready');
    add(
      ns,
      {
        service: service(),
        endpoints: [
          ep(`${'a'.repeat(63)}.${'b'.repeat(63)}.${'c'.repeat(63)}.${'d'.repeat(61)}`),
          ep('localhost'),
          ep('x'),
          ep('1.2.3'),
          ep('010.0.0.1'),
          ep('10.0.0.256'),
          ep('1.2.3.4.5'),
          ep('255.255.255.255'),
        ],
      },
      true,
      'Ready',
    );
    // Unicode and separators in values fit Consul when they are few.
    add(
      ns,
      {
        service: service(),
        endpoints: [ep('10.70.2.1')],
        tags: tagsOf(unicode),
        metadata: {
          'a/b': 'x',
          '..': 'y',
          '../../etc': 'z',
          'sp ace': 'w',
          ünï: 'v',
          __proto__x: 'u',
          constructor: 'c',
          'kr-owner-cluster': 'spoof',
          'consul-x': 'y',
          ['k'.repeat(128)]: 'long key',
        },
      },
      true,
      'Ready',
    );
    for (const [i, value] of unicode.entries())
      add(
        ns,
        { service: service(), endpoints: [{ ...ep(`10.70.3.${i + 1}`), tags: { zone: value } }], metadata: { note: value } },
        true,
        'Ready',
      );
  }
  // Prototype keys: must neither vanish nor make the operator rewrite the entry on every resync.
  add(
    shortNs,
    { service: service(), endpoints: [ep('10.70.4.1')], metadata: { ['__proto__']: 'p', toString: 't', hasOwnProperty: 'h' } },
    true,
    'Ready',
  );

  // Valid for the schema, marked not Ready with a message.
  for (const ns of namespaces) {
    add(
      ns,
      { service: service(), endpoints: [ep('10.71.0.1'), ep('10.71.0.1'), ep('10.71.0.2'), ep('10.71.0.2', 80)] },
      true,
      'NotReady',
      /duplicates/,
    );
    add(
      ns,
      { service: service(), endpoints: [ep('2001:db8::7'), ep('2001:DB8::7'), ep('2001:0db8:0000:0000:0000:0000:0000:0007')] },
      true,
      'NotReady',
      /duplicates/,
    );
    add(
      ns,
      { service: service(), selector: { matchLabels: { app: 'hostile' } }, port: 'nope' },
      true,
      'NotReady',
      /no container port named "nope"/,
    );
    add(
      ns,
      { service: service(), selector: { matchLabels: { app: 'nobody-has-this' } }, port: 'http' },
      true,
      'NotReady',
      /no pod matching/,
    );
    add(ns, { service: service(), endpoints: [] }, true, 'NotReady', /no endpoints/);
    // Unspecified addresses pass the schema (they are IPs) but Consul refuses them: status says so.
    add(ns, { service: service(), endpoints: [ep('0.0.0.0'), ep('::')] }, true, 'NotReady', /Invalid service address/);
    add(
      ns,
      { service: service(), endpoints: [ep('10.71.1.1')], registries: ['does-not-exist', 'nope.example.com'] },
      true,
      'NotReady',
      /does not exist/,
    );
    // Too big for Consul's Meta limits: etcd takes it, Consul refuses it, status says so.
    add(
      ns,
      {
        service: service(),
        endpoints: [ep('10.71.2.1')],
        tags: Object.fromEntries(Array.from({ length: 64 }, (_, i) => [`tag-${i}`, repeat('🚀', 256)])),
      },
      true,
      'NotReady',
      /Meta/,
    );
    add(
      ns,
      {
        service: service(),
        endpoints: [ep('10.71.2.2')],
        metadata: Object.fromEntries(Array.from({ length: 64 }, (_, i) => [`m${i}`, 'v'.repeat(512)])),
      },
      true,
      'NotReady',
      /Meta/,
    );
  }
  // Every extreme Registry, named by one ServiceInstance in each namespace.
  for (const reg of hostileRegistries.filter((r) => r.admitted)) {
    for (const ns of namespaces)
      add(ns, { service: service(), endpoints: [ep('10.72.0.1'), ep('10.72.0.2')], registries: [reg.name] }, true);
  }
  // Sixteen Registries at once, some missing.
  add(
    shortNs,
    {
      service: service(),
      endpoints: [ep('10.73.0.1')],
      registries: [
        ...hostileRegistries
          .filter((r) => r.admitted)
          .slice(0, 12)
          .map((r) => r.name),
        'missing-a',
        'missing-b',
        mainEtcd,
        mainConsul,
      ],
    },
    true,
  );
  // Selectors over pods with odd labels and ports.
  add(
    shortNs,
    {
      service: service(),
      selector: {
        matchExpressions: Array.from({ length: 16 }, (_, i) => ({
          key: `k${i}`,
          operator: i % 2 ? 'DoesNotExist' : 'NotIn',
          values: i % 2 ? undefined : Array.from({ length: 64 }, (_, j) => `v${j}`),
        })),
      },
      port: 8080,
    },
    true,
  );
  add(shortNs, { service: service(), selector: { matchLabels: { app: 'hostile' } }, port: 'http' }, true, 'Ready');
  add(shortNs, { service: service(), selector: { matchLabels: { app: 'hostile' } }, port: 65535 }, true, 'Ready');
  add(shortNs, { service: service(), endpoints: [ep('10.74.0.1')] }, true, 'Ready', undefined, `n${'.x'.repeat(100)}`.slice(0, 253));

  // Malformed: refused at admission.
  const badAddresses = [
    '::ffff:10.0.0.1',
    '10.0.0.1/24',
    '10.0.0.1:80',
    'http://x',
    'a..b',
    '..',
    '.',
    'a/../b',
    '../etc',
    'a b',
    'UPPER.example.com',
    'ünï.example',
    'fe80::1%eth0',
    'fe80::1%2F..%2F',
    '',
    'x'.repeat(254),
    '-a.example',
    'a-.example',
    '_x.example',
    'a_b',
    '[::1]',
    'a.',
    '.a',
    'a\nb',
    'a%2fb',
    '\u0000',
  ];
  for (const a of badAddresses) add(shortNs, { service: service(), endpoints: [ep(a)] }, false);
  for (const s of ['a.b', 'a/b', 'UP', 's'.repeat(64), '..', '', 'ünï', '-a', 'a-', 'a_b', 'a b'])
    add(shortNs, { service: s, endpoints: [ep('10.75.0.1')] }, false);
  for (const k of ['a/b', 'a=b', 'a,b', 'k'.repeat(64), 'ünï', '', '-a', 'a.'])
    add(shortNs, { service: service(), endpoints: [ep('10.75.0.2')], tags: { [k]: 'v' } }, false);
  add(
    shortNs,
    { service: service(), endpoints: [ep('10.75.0.3')], tags: Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`t${i}`, 'v'])) },
    false,
  );
  add(shortNs, { service: service(), endpoints: [ep('10.75.0.3')], tags: { t: 'v'.repeat(257) } }, false);
  add(shortNs, { service: service(), endpoints: [ep('10.75.0.3')], metadata: { m: 'v'.repeat(513) } }, false);
  add(shortNs, { service: service(), endpoints: [ep('10.75.0.3')], metadata: { ['m'.repeat(129)]: 'v' } }, false);
  add(shortNs, { service: service(), endpoints: [ep('10.75.0.3')], metadata: { '': 'v' } }, false);
  add(shortNs, { service: service(), endpoints: staticEndpoints(1001) }, false);
  add(shortNs, { service: service(), selector: { matchLabels: { app: 'x' } }, endpoints: [ep('10.75.0.4')], port: 80 }, false);
  add(shortNs, { service: service(), selector: {}, port: 80 }, false);
  add(shortNs, { service: service(), selector: { matchLabels: { app: 'x' } } }, false);
  for (const port of [0, 70000, -1, 'HTTP', 'a'.repeat(16), '8080', 'a--b', '-a'])
    add(shortNs, { service: service(), selector: { matchLabels: { app: 'x' } }, port }, false);
  for (const weight of [-1, 1001]) add(shortNs, { service: service(), endpoints: [ep('10.75.0.5')], weight }, false);
  add(shortNs, { service: service(), endpoints: [{ address: '10.75.0.6' }] }, false);
  for (const r of ['UP', '../x', 'a/b', 'x'.repeat(254)])
    add(shortNs, { service: service(), endpoints: [ep('10.75.0.7')], registries: [r] }, false);
  add(shortNs, { service: service(), endpoints: [ep('10.75.0.8')], registries: Array.from({ length: 17 }, (_, i) => `r${i}`) }, false);
  add(shortNs, { service: service(), selector: { matchExpressions: [{ key: 'a', operator: 'In' }] }, port: 80 }, false);
  add(shortNs, { service: service(), selector: { matchLabels: { 'a/b/c': 'x' } }, port: 80 }, false);
  return cases;
}

// --- what landed --------------------------------------------------------------------------------

/** Renders a Registry namespace template the way the operator documents it. */
function render(template: string, values: Record<string, string>): string {
  return template.replace(/\{(namespace|service)\}/g, (_m, k: string) => values[k] ?? '');
}

/** Whether a rendered name is one the operator may use at all (DESIGN: no '/', no '..', at most 253 characters). */
function usable(name: string): boolean {
  return name !== '' && !name.includes('/') && !name.includes('..') && name !== '.' && name.length <= 253;
}

/** An etcd key space of one Registry: its prefix and its namespace template. */
interface EtcdArea {
  readonly prefix: string;
  readonly template: string;
}

function etcdAreas(regs: readonly RegistryCase[]): EtcdArea[] {
  return regs
    .filter((r) => r.admitted && r.spec['type'] === 'etcd')
    .map((r) => ({
      prefix: (r.spec['etcd'] as { prefix?: string }).prefix ?? '/services',
      template: (r.spec['namespace'] as string | undefined) ?? '{namespace}',
    }));
}

/**
 * Why an etcd key of this operator lies outside every place its writer may use, or undefined when
 * it lies inside one: `<prefix>/<namespace rendered for the owner>/<service>/<address:port>`, or the
 * bookkeeping `<prefix>/_kube-registrar/leases/<cluster>/<namespace>` and `.../owners/<namespace>/...`.
 */
function misplaced(key: string, value: string, areas: readonly EtcdArea[]): string | undefined {
  for (const { prefix, template } of areas) {
    if (!key.startsWith(`${prefix}/`)) continue;
    const allowed = namespaces.map((ns) => render(template, { namespace: ns })).filter(usable);
    const rest = key.slice(prefix.length + 1).split('/');
    if (rest[0] === '_kube-registrar') {
      if (rest[1] === 'leases' && rest[2] === clusterId && rest.length === 4 && allowed.includes(rest[3] ?? '')) return undefined;
      if (rest[1] === 'owners' && rest.length === 5 && allowed.includes(rest[2] ?? '')) return undefined;
      continue;
    }
    const [ns = '', service = '', instance = ''] = rest;
    if (rest.length !== 3 || !allowed.includes(ns)) continue;
    if (!/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(service) || !/^(\[[0-9a-f:.]+\]|[a-z0-9.-]+):\d{1,5}$/.test(instance)) continue;
    const owner = ownerOf(value);
    // hostport and grpc values carry no owner (their owner index, checked above, does).
    if (
      owner === undefined
        ? /^\S+:\d{1,5}$/.test(value) || /^\{"Op":0,"Addr":"\S+:\d{1,5}"\}$/.test(value)
        : owner.clusterId === clusterId && render(template, { namespace: owner.namespace }) === ns
    )
      return undefined;
  }
  return `${key} lies outside every registry namespace its writer may use`;
}

function ownerOf(value: string): { clusterId: string; namespace: string } | undefined {
  try {
    const v = JSON.parse(value) as {
      owner?: { clusterId: string; namespace: string };
      Metadata?: { owner?: { clusterId: string; namespace: string } };
    };
    return v.owner ?? v.Metadata?.owner;
  } catch {
    return undefined;
  }
}

/** Every ServiceInstance of the hostile namespaces by `namespace/name`: two list calls instead of hundreds of gets. */
async function listInstances(): Promise<Map<string, ServiceInstanceView>> {
  const out = new Map<string, ServiceInstanceView>();
  for (const ns of namespaces) {
    const list = (await kc
      .makeApiClient(CustomObjectsApi)
      .listNamespacedCustomObject({ group: 'registrar.dev', version: 'v1alpha1', plural: 'serviceinstances', namespace: ns })) as {
      items: ServiceInstanceView[];
    };
    for (const si of list.items) out.set(`${ns}/${si.metadata.name}`, si);
  }
  return out;
}

function isRejection(err: unknown): boolean {
  const code = (err as { code?: number }).code;
  return code === 422 || code === 400;
}

describe('hostile input', () => {
  const registries = registryCases();
  const instances = instanceCases(registries);

  before(async () => {
    kc = adminKubeConfig();
    etcd = new Etcd3({ hosts: bedEnv('ETCD_ENDPOINTS').split(',') });
    await installCrds(kc);
    for (const ns of namespaces) await createNamespace(kc, ns, { hostile: sfx });
    await kc.makeApiClient(CoreV1Api).createNamespacedSecret({
      namespace: shortNs,
      body: {
        metadata: { name: 'garbage' },
        stringData: {
          username: 'u',
          password: 'p\u0000\n',
          'ca.crt': 'not a certificate',
          'tls.crt': '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----',
          'tls.key': '\u0000',
        },
      },
    });
    // Pods with odd labels and ports for the selector cases.
    for (const ns of namespaces) {
      for (const [i, ip] of ['10.76.0.1', '10.76.0.2', 'fd00::76:3'].entries()) {
        await createPod(kc, ns, `hostile-${i}`, {
          labels: { app: 'hostile', [`k${i}`]: 'v1' },
          ports: [{ name: 'http', containerPort: 8080 }, { containerPort: 65535 }],
        });
        await setPodReady(kc, ns, `hostile-${i}`, ip, true);
      }
    }
    await createRegistry(kc, mainEtcd, {
      type: 'etcd',
      default: true,
      namespaceSelector: { matchLabels: { hostile: sfx } },
      leaseTTLSeconds: 30,
      etcd: { endpoints: [bedEnv('ETCD_ENDPOINTS')], prefix: `${root}/main` },
    });
    await createRegistry(kc, mainConsul, {
      type: 'consul',
      default: true,
      namespaceSelector: { matchLabels: { hostile: sfx } },
      leaseTTLSeconds: 30,
      consul: { address: bedEnv('CONSUL_HTTP_ADDR'), serviceName: '{namespace}-{service}' },
    });
    operator = await startOperatorOn({
      kubeconfig: bedEnv('KUBECONFIG'),
      flags: [`--cluster-id=${clusterId}`, `--watch-namespaces=${namespaces.join(',')}`, '--resync-period=5', '--registry-timeout=3'],
      metrics: true,
    });
  });

  after(async () => {
    console.log(tally.line());
    await operator?.process.stop();
    for (const r of [...registries.filter((c) => c.admitted).map((c) => c.name), mainEtcd, mainConsul])
      await deleteRegistry(kc, r).catch(() => undefined);
    etcd?.close();
  });

  test('every malformed or extreme Registry is refused at admission or accepted, and every ServiceInstance is refused, registered as written, or marked not Ready with a message', async () => {
    assert.ok(operator);
    // Registries first, so that the ServiceInstances naming them find them.
    for (const r of registries) {
      tally.badInputs++;
      const created = await createRegistry(kc, r.name, r.spec).then(
        () => true,
        (err: unknown) => {
          if (!isRejection(err)) throw err;
          return false;
        },
      );
      assert.equal(
        created,
        r.admitted,
        `Registry ${r.name} ${JSON.stringify(r.spec).slice(0, 300)} was ${created ? 'admitted' : 'refused'}`,
      );
    }
    const queue = [...instances];
    const worker = async (): Promise<void> => {
      for (let c = queue.shift(); c; c = queue.shift()) {
        tally.badInputs++;
        const created = await createServiceInstance(kc, c.namespace, c.name, c.spec).then(
          () => true,
          (err: unknown) => {
            if (!isRejection(err)) throw err;
            const body = JSON.stringify((err as { body?: unknown }).body ?? '');
            assert.ok(body.length > 0, `the refusal of ${c.name} carries a message`);
            return false;
          },
        );
        assert.equal(
          created,
          c.admitted,
          `ServiceInstance ${c.name} ${JSON.stringify(c.spec).slice(0, 300)} was ${created ? 'admitted' : 'refused'}`,
        );
      }
    };
    await Promise.all(Array.from({ length: 6 }, worker));
    const admitted = instances.filter((c) => c.admitted);
    console.log(
      `hostile input: ${registries.length} Registries (${registries.filter((r) => r.admitted).length} admitted), ${instances.length} ServiceInstances (${admitted.length} admitted)`,
    );

    // Every admitted ServiceInstance gets a status for its generation with a message.
    const settled = new Map<string, ServiceInstanceView>();
    await waitFor(
      'every admitted ServiceInstance to have status for its generation',
      async () => {
        const all = await listInstances();
        for (const c of admitted) {
          if (settled.has(`${c.namespace}/${c.name}`)) continue;
          const si = all.get(`${c.namespace}/${c.name}`);
          const ready = si?.status?.conditions?.find((x) => x.type === 'Ready');
          const done =
            si &&
            si.status?.observedGeneration === si.metadata.generation &&
            ready &&
            (c.outcome === undefined || (c.outcome === 'Ready') === (ready.status === 'True'));
          if (done) settled.set(`${c.namespace}/${c.name}`, si);
        }
        return settled.size === admitted.length ? true : undefined;
      },
      SETTLE_MS,
      1000,
    ).catch((err: unknown) => {
      const pending = admitted
        .filter((c) => !settled.has(`${c.namespace}/${c.name}`))
        .map((c) => `${c.namespace}/${c.name} (${c.outcome ?? 'any'})`);
      throw new Error(`not settled: ${pending.join(', ')}`, { cause: err });
    });
    for (const c of admitted) {
      const si = settled.get(`${c.namespace}/${c.name}`);
      const ready = si?.status?.conditions?.find((x) => x.type === 'Ready');
      assert.ok(ready && ready.message.length > 0, `${c.name} has a Ready condition with a message`);
      if (ready.status === 'False') {
        assert.match(
          ready.reason,
          /^(InvalidEndpoints|RegistrationFailed|RegistryNotFound|NamespaceNotAdmitted|NoRegistry|NoReadyEndpoints|OwnershipConflict)$/,
          `${c.name}: reason ${ready.reason}`,
        );
        if (c.messageIncludes) assert.match(ready.message, c.messageIncludes, `${c.name}: ${ready.message}`);
      }
    }

    // What is Ready in the default Registries is there exactly as written.
    for (const c of admitted.filter(
      (x) => x.outcome === 'Ready' && x.spec['endpoints'] !== undefined && x.spec['registries'] === undefined,
    )) {
      const endpoints = c.spec['endpoints'] as { address: string; port: number }[];
      const dir = `${root}/main/${c.namespace}/${String(c.spec['service'])}/`;
      const keys = (await etcdKeys(etcd, dir)).map((kv) => kv.key.slice(dir.length)).sort();
      const expected = [
        ...new Set(endpoints.map((e) => (e.address.includes(':') ? `[${e.address}]:${e.port}` : `${e.address}:${e.port}`))),
      ].sort();
      const missing = expected.filter((e) => !keys.includes(e));
      tally.checked(expected.length, missing.length);
      assert.deepEqual(keys, expected, `${c.name}: etcd holds exactly its endpoints`);
    }
    assert.ok(await operatorAlive(operator), 'the operator is alive after all of it');
    assert.deepEqual(crashLines(await operator.log()), []);
  });

  test("no write lands outside the writer's registry namespace, nothing is rewritten on every resync, and deleting everything leaves nothing behind", async () => {
    assert.ok(operator);
    const areas = [...etcdAreas(registries), { prefix: `${root}/main`, template: '{namespace}' }];
    const scanEtcd = async (): Promise<{ ours: number; problems: string[] }> => {
      const problems: string[] = [];
      let ours = 0;
      for (const kv of await etcdKeys(etcd, '')) {
        const mine = kv.key.startsWith(`${root}/`) || kv.key.includes(clusterId) || kv.value.includes(clusterId);
        if (!mine) continue;
        ours++;
        if (!kv.key.startsWith(`${root}/`)) problems.push(`${kv.key} is outside every prefix of this test`);
        else {
          const why = misplaced(kv.key, kv.value, areas);
          if (why) problems.push(why);
        }
      }
      return { ours, problems };
    };
    const consulNames = new Set<string>();
    for (const r of [
      ...registries.filter((x) => x.admitted && x.spec['type'] === 'consul'),
      { spec: { consul: { serviceName: '{namespace}-{service}' } } },
    ]) {
      const template = (r.spec['consul'] as { serviceName?: string }).serviceName ?? '{service}';
      for (const ns of namespaces)
        for (const c of instances) consulNames.add(render(template, { namespace: ns, service: String(c.spec['service']) }));
      for (const ns of namespaces) consulNames.add(render(template, { namespace: ns, service: 'kube-registrar-heartbeat' }));
    }
    const scanConsul = async (): Promise<{ ours: number; heartbeats: number; problems: string[] }> => {
      const problems: string[] = [];
      const services = await agentServices(
        bedEnv('CONSUL_HTTP_ADDR'),
        process.env['CONSUL_HTTP_TOKEN'],
        `Meta["kr-owner-cluster"] == "${clusterId}"`,
      );
      let heartbeats = 0;
      for (const s of services) {
        if (s.meta['kr-role'] === 'heartbeat') heartbeats++;
        const k8sNs = s.meta['kr-k8s-namespace'] ?? s.meta['kr-registry-namespace'] ?? '';
        if (!s.id.startsWith('kr-')) problems.push(`service id ${s.id} is not one of ours`);
        if (!consulNames.has(s.name)) problems.push(`service ${s.id} is named ${JSON.stringify(s.name)}, which no Registry template gives`);
        if (s.meta['kr-role'] !== 'heartbeat' && !namespaces.includes(k8sNs)) problems.push(`service ${s.id} claims namespace ${k8sNs}`);
      }
      return { ours: services.length - heartbeats, heartbeats, problems };
    };

    const etcdScan = await scanEtcd();
    const consulScan = await scanConsul();
    console.log(
      `hostile input scan: ${etcdScan.ours} etcd keys and ${consulScan.ours} Consul instances (+${consulScan.heartbeats} heartbeats) of this operator`,
    );
    assert.deepEqual(etcdScan.problems, [], "every etcd key lies in its writer's registry namespace");
    assert.deepEqual(consulScan.problems, [], "every Consul service lies in its writer's scope");
    assert.ok(etcdScan.ours > 1000 && consulScan.ours > 1000, 'the scan saw the entries');

    const modifyIndex = async (): Promise<Map<string, number>> => {
      const out = new Map<string, number>();
      for (const ns of namespaces) {
        for (const c of instances.filter((x) => x.namespace === ns && x.outcome === 'Ready')) {
          const name = `${ns}-${String(c.spec['service'])}`;
          const res = await fetch(`${bedEnv('CONSUL_HTTP_ADDR')}/v1/catalog/service/${encodeURIComponent(name)}`, {
            signal: AbortSignal.timeout(20_000),
          });
          for (const s of (await res.json()) as { ServiceID: string; ModifyIndex: number }[]) out.set(s.ServiceID, s.ModifyIndex);
        }
      }
      return out;
    };
    // Two resyncs later nothing was rewritten: odd values do not make the plan flap.
    const puts: string[] = [];
    const watcher = await etcd.watch().prefix(`${root}/main/`).create();
    let indexBefore: Map<string, number>;
    let indexAfter: Map<string, number>;
    let logFrom: number;
    let before: Map<string, string>;
    try {
      watcher.on('put', (kv) => puts.push(kv.key.toString()));
      before = new Map(
        (
          await agentServices(bedEnv('CONSUL_HTTP_ADDR'), process.env['CONSUL_HTTP_TOKEN'], `Meta["kr-owner-cluster"] == "${clusterId}"`)
        ).map((s) => [s.id, JSON.stringify(s)]),
      );
      indexBefore = await modifyIndex();
      logFrom = (await operator.log()).length;
      assert.ok(operator.metricsUrl);
      await waitForResyncs(operator.metricsUrl, await countServiceInstances(kc, namespaces), 2, SETTLE_MS);
      indexAfter = await modifyIndex();
    } finally {
      await watcher.cancel();
    }
    const rewrittenConsul = [...indexBefore].filter(([id, i]) => indexAfter.get(id) !== i).map(([id]) => id);
    assert.deepEqual([...new Set(puts)], [], 'no etcd entry was rewritten across two resyncs');
    assert.deepEqual(rewrittenConsul, [], 'no Consul service was re-registered across two resyncs');
    // An agent re-registration that changes nothing leaves the catalog alone; the operator's log
    // still says whether it wrote. Only the ServiceInstances that keep failing may try again.
    const ready = new Set(instances.filter((c) => c.outcome === 'Ready').map((c) => `${c.namespace}/${c.name}`));
    const writes = (await operator.log())
      .slice(logFrom)
      .split('\n')
      .filter((l) => l.includes('"msg":"applying registry changes"'))
      .map((l) => JSON.parse(l) as { serviceInstance: string; registry: string })
      .filter((l) => ready.has(l.serviceInstance));
    assert.deepEqual(writes, [], 'no Ready ServiceInstance wrote anything across two resyncs');
    assert.ok(before.size > 0);

    // Delete everything: finalizers remove every entry, whatever it looked like. A ServiceInstance
    // naming a Registry the operator cannot reach waits for it, as a finalizer must, until that
    // Registry is deleted (a deleted Registry keeps nothing alive).
    const admitted = instances.filter((c) => c.admitted);
    const brokenNames = new Set(registries.filter((r) => r.broken).map((r) => r.name));
    const namesBroken = (c: InstanceCase): boolean =>
      ((c.spec['registries'] as string[] | undefined) ?? []).some((r) => brokenNames.has(r));
    const queue = [...admitted];
    await Promise.all(
      Array.from({ length: 6 }, async () => {
        for (let c = queue.shift(); c; c = queue.shift()) await deleteServiceInstance(kc, c.namespace, c.name);
      }),
    );
    const finalized = async (cases: readonly InstanceCase[]): Promise<void> => {
      let left: string[] = [];
      await waitFor(
        'the ServiceInstances to be finalized',
        async () => {
          const all = await listInstances();
          left = cases
            .filter((c) => all.has(`${c.namespace}/${c.name}`))
            .map((c) => `${c.namespace}/${c.name} ${JSON.stringify(c.spec).slice(0, 120)}`);
          return left.length === 0 ? true : undefined;
        },
        SETTLE_MS,
        1000,
      ).catch((err: unknown) => {
        throw new Error(`still there: ${left.join('; ')}`, { cause: err });
      });
    };
    await finalized(admitted.filter((c) => !namesBroken(c)));
    const remaining = await listInstances();
    const stuck = admitted.filter(namesBroken).filter((c) => remaining.has(`${c.namespace}/${c.name}`));
    console.log(`hostile input: ${stuck.length} ServiceInstances wait for an unreachable or broken Registry before they go`);
    for (const name of brokenNames) await deleteRegistry(kc, name);
    await finalized(admitted);
    const left = (await etcdKeys(etcd, `${root}/`)).map((kv) => kv.key).filter((k) => !k.includes('/_kube-registrar/leases/'));
    assert.deepEqual(left, [], 'no entry is left in etcd but the lease bookkeeping');
    const consulLeft = await scanConsul();
    assert.equal(consulLeft.ours, 0, 'no instance is left in Consul, only heartbeats');
    assert.deepEqual(consulLeft.problems, []);
    assert.ok(await operatorAlive(operator));
    assert.deepEqual(crashLines(await operator.log()), []);
  });
});
