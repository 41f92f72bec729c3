/**
 * `@kube-registrar/discovery` as a consumer gets it: npm packs the workspace (its prepack builds
 * dist/), an empty project installs the tarball, its dependencies coming from the npm registry, and
 * plain JavaScript run by node uses it against the bed's etcd. Node does not strip types under
 * node_modules, so this works only from the built JavaScript the exports point to.
 *
 * What a consumer relies on: the package brings etcd3 and cockatiel but nothing of the operator,
 * its optional peers (prom-client, @grpc/grpc-js) stay optional, every entry point loads and has
 * declarations a TypeScript project can use, and everything it installs is open source.
 *
 * It needs the npm registry (or a cache in ~/.npm that already holds every package): without
 * either it fails, saying so.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';

import { Etcd3 } from 'etcd3';

import type { Instance } from '../../packages/discovery/src/index.ts';
import { encodeEntry } from '../../src/registry/etcd/codec.ts';
import { EtcdKeyLayout } from '../../src/registry/etcd/keys.ts';
import type { RegistryEntry } from '../../src/registry/types.ts';
import { bedEtcdEndpoints } from '../support/env.ts';

const REPO_ROOT = join(import.meta.dirname, '../..');
const PACKAGE_DIR = join(REPO_ROOT, 'packages/discovery');
const PACKAGE_NAME = '@kube-registrar/discovery';

const endpoints = bedEtcdEndpoints();

/** Generous: npm downloads from the registry on a loaded 2-core machine. */
const NPM_TIMEOUT_MS = 10 * 60_000;
/** A consumer script connects, registers, reads and closes; a minute is plenty even when loaded. */
const SCRIPT_TIMEOUT_MS = 2 * 60_000;

/** Licences (SPDX ids) a runtime dependency of the package may have. */
const OPEN_SOURCE_LICENCES = new Set(['MIT', 'ISC', 'Apache-2.0', 'BSD-2-Clause', 'BSD-3-Clause', '0BSD']);

/** How to run the npm the repository uses. */
interface NpmCommand {
  readonly file: string;
  readonly args: readonly string[];
}

/**
 * The npm that runs this test (npm_execpath, set by `npm test` and npx), else the npm installed
 * beside this node, else `npm` from PATH. npm-cli.js runs under the node npm itself ran under.
 */
function findNpm(): NpmCommand {
  const execpath = process.env['npm_execpath'];
  if (execpath !== undefined && basename(execpath) === 'npm-cli.js' && existsSync(execpath)) {
    return { file: process.env['npm_node_execpath'] ?? process.execPath, args: [execpath] };
  }
  const besideNode = join(dirname(process.execPath), '../lib/node_modules/npm/bin/npm-cli.js');
  if (existsSync(besideNode)) return { file: process.execPath, args: [besideNode] };
  return { file: 'npm', args: [] };
}

/**
 * The environment for npm in the consumer project: this process's, without what `npm test` says
 * about the repository (its package, its lifecycle event, its prefix), which would otherwise leak
 * into a project that is not ours. The npm_config_* settings stay: the registry, CA file and cache
 * must be the same ones.
 */
function consumerEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  for (const key of Object.keys(env)) {
    if (/^npm_(package_|lifecycle_|command$|config_local_prefix$|config_workspaces?$)/i.test(key) || key === 'NODE_TEST_CONTEXT') {
      delete env[key];
    }
  }
  return env;
}

/** Runs a command, or throws with what it printed so that the reason is in the test output. */
async function run(what: string, file: string, args: readonly string[], cwd: string, timeoutMs: number): Promise<string> {
  try {
    const { stdout } = await promisify(execFile)(file, args, { cwd, env: consumerEnv(), timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024 });
    return stdout;
  } catch (err: unknown) {
    const { stdout, stderr } = err as { stdout?: string; stderr?: string };
    const output = `${stdout ?? ''}\n${stderr ?? ''}`.trim().split('\n').slice(-40).join('\n');
    throw new Error(`${what} failed (${file} ${args.join(' ')} in ${cwd}): ${(err as Error).message}\n${output}`, { cause: err });
  }
}

const npm = findNpm();

/** Runs npm in `cwd`. */
function runNpm(what: string, args: readonly string[], cwd: string): Promise<string> {
  return run(what, npm.file, [...npm.args, ...args], cwd, NPM_TIMEOUT_MS);
}

/** Installs packages into the consumer project from the registry, failing clearly without it. */
async function npmInstall(project: string, specs: readonly string[]): Promise<void> {
  const registry = (await runNpm('npm config get registry', ['config', 'get', 'registry'], project)).trim();
  try {
    await runNpm(`npm install ${specs.join(' ')}`, ['install', '--no-audit', '--no-fund', ...specs], project);
  } catch (err: unknown) {
    throw new Error(
      `could not install ${specs.join(' ')} into a consumer project: this test needs the npm registry (${registry}) or a ~/.npm cache that holds every package. ` +
        `Check network access to the registry, then run it again.`,
      { cause: err },
    );
  }
}

/** One package installed in a project. */
interface InstalledPackage {
  readonly name: string;
  readonly version: string;
  readonly license: string;
  /** Relative to the project, e.g. node_modules/etcd3/node_modules/cockatiel. */
  readonly path: string;
  /** The names its package.json lists as dependencies. */
  readonly dependencies: readonly string[];
}

/**
 * The names of every installed package the given ones need, directly or through others, by name
 * (versions aside): what installing them brings whoever else also depends on it.
 */
function broughtBy(installed: readonly InstalledPackage[], roots: Iterable<string>): Set<string> {
  const needs = new Map<string, Set<string>>();
  for (const p of installed) {
    const set = needs.get(p.name) ?? new Set<string>();
    for (const d of p.dependencies) set.add(d);
    needs.set(p.name, set);
  }
  const reached = new Set<string>();
  const pending = [...roots];
  for (let name = pending.pop(); name !== undefined; name = pending.pop()) {
    if (reached.has(name)) continue;
    reached.add(name);
    pending.push(...(needs.get(name) ?? []));
  }
  return reached;
}

/** The licence a package.json declares, in either the current or the old (`licenses`) form. */
function declaredLicence(manifest: { license?: unknown; licenses?: unknown }): string {
  const { license, licenses } = manifest;
  if (typeof license === 'string') return license;
  if (typeof license === 'object' && license !== null && 'type' in license) return String(license.type);
  if (Array.isArray(licenses)) return licenses.map((l: { type?: unknown }) => String(l.type)).join(' OR ');
  return 'none declared';
}

/** Every package under `project`'s node_modules, nested ones included, read from disk. */
async function installedPackages(project: string, under = 'node_modules'): Promise<InstalledPackage[]> {
  const found: InstalledPackage[] = [];
  const dir = join(project, under);
  if (!existsSync(dir)) return found;
  for (const entry of await readdir(dir)) {
    if (entry.startsWith('.')) continue;
    const paths = entry.startsWith('@') ? (await readdir(join(dir, entry))).map((e) => `${under}/${entry}/${e}`) : [`${under}/${entry}`];
    for (const path of paths) {
      const manifestFile = join(project, path, 'package.json');
      if (!existsSync(manifestFile)) continue;
      const manifest = JSON.parse(await readFile(manifestFile, 'utf8')) as {
        name: string;
        version: string;
        license?: unknown;
        dependencies?: Record<string, string>;
      };
      const dependencies = Object.keys(manifest.dependencies ?? {});
      found.push({ name: manifest.name, version: manifest.version, license: declaredLicence(manifest), path, dependencies });
      found.push(...(await installedPackages(project, `${path}/node_modules`)));
    }
  }
  return found;
}

/** Whether an SPDX expression (`MIT`, `(MIT OR Apache-2.0)`, `A AND B`) allows open-source use. */
function isOpenSource(expression: string): boolean {
  return expression
    .replace(/[()]/g, '')
    .split(/\s+OR\s+/)
    .some((alternative) => alternative.split(/\s+AND\s+/).every((id) => OPEN_SOURCE_LICENCES.has(id.trim())));
}

/** The last line a consumer script prints: its findings, as JSON. */
function lastJsonLine<T>(stdout: string): T {
  const lines = stdout.trim().split('\n');
  return JSON.parse(lines[lines.length - 1] ?? '') as T;
}

/** Runs a consumer script with this node, in the consumer project. */
function runScript(project: string, script: string, args: readonly string[]): Promise<string> {
  return run(`consumer script ${script}`, process.execPath, [script, ...args], project, SCRIPT_TIMEOUT_MS);
}

/** Registers itself, then lists and picks the instances of the service, from the built package. */
const REGISTER_AND_READ = `
import { etcdDiscovery } from '${PACKAGE_NAME}';

const [prefix, service, port] = process.argv.slice(2);
const discovery = etcdDiscovery({ hosts: process.env.ETCD_ENDPOINTS.split(','), prefix, namespace: 'pkgtest' });
try {
  const registration = await discovery.register({ service, address: '192.0.2.10', port: Number(port), tags: { zone: 'a' } });
  const instances = await discovery.instances(service);
  const picked = await discovery.pick(service, { zone: 'a' });
  const entry = import.meta.resolve('${PACKAGE_NAME}');
  console.log(JSON.stringify({ entry, registration: registration.id, instances, picked }));
} finally {
  await discovery.close();
}
`;

/** Calls the service through a client with Prometheus hooks, and loads the gRPC entry point. */
const METRICS_AND_GRPC = `
import { Registry } from 'prom-client';
import { etcdDiscovery } from '${PACKAGE_NAME}';
import { prometheusHooks } from '${PACKAGE_NAME}/prometheus';

const [prefix, service] = process.argv.slice(2);
const grpcEntry = await import('${PACKAGE_NAME}/grpc');
const zookeeperEntry = await import('${PACKAGE_NAME}/zookeeper');
const registry = new Registry();
const discovery = etcdDiscovery({ hosts: process.env.ETCD_ENDPOINTS.split(','), prefix, namespace: 'pkgtest', hooks: prometheusHooks(registry) });
let called, metrics;
try {
  called = await discovery.call(service, async (instance) => instance.id);
  metrics = await registry.metrics();
} finally {
  await discovery.close();
}
const entries = ['', '/prometheus', '/grpc', '/zookeeper'].map((subpath) => import.meta.resolve('${PACKAGE_NAME}' + subpath));
console.log(JSON.stringify({ entries, grpcExports: Object.keys(grpcEntry), zookeeperExports: Object.keys(zookeeperEntry), called, metrics }));
`;

/** Uses every entry point's declarations; the one wrong line must be the only error. */
const TYPED_CONSUMER = `
import { etcdDiscovery, type Instance } from '${PACKAGE_NAME}';
import { prometheusHooks } from '${PACKAGE_NAME}/prometheus';
import type * as grpc from '${PACKAGE_NAME}/grpc';
import { Registry } from 'prom-client';

const discovery = etcdDiscovery({ hosts: ['http://127.0.0.1:2379'], prefix: '/p', namespace: 'n', hooks: prometheusHooks(new Registry()) });
const picked: Instance = await discovery.pick('echo');
const port: number = picked.port;
// @ts-expect-error a port is a number: the declarations are read, not an implicit any
const wrong: string = picked.port;
export type GrpcEntryPoint = typeof grpc;
export const used: [number, string] = [port, wrong];
`;

describe('the discovery package installed from its tarball', () => {
  const prefix = `/pkgtest-${randomUUID().slice(0, 8)}`;
  const service = 'echo';
  const etcd = new Etcd3({ hosts: endpoints });
  let workDir = '';
  let project = '';

  /** An instance the operator registered, written with its own codec and key layout. */
  const operatorEntry: RegistryEntry = {
    registryNamespace: 'pkgtest',
    k8sNamespace: 'shop',
    owner: { clusterId: 'cluster-a', namespace: 'shop', name: 'echo-si' },
    endpoint: {
      service,
      instanceId: '192.0.2.20:8080',
      address: '192.0.2.20',
      port: 8080,
      weight: 1,
      tags: { zone: 'b' },
      metadata: {},
      source: 'pod/shop/echo-0',
    },
  };

  before(async () => {
    workDir = await mkdtemp(join(tmpdir(), 'discovery-package-'));
    const packDir = join(workDir, 'pack');
    project = join(workDir, 'consumer');
    await mkdir(packDir, { recursive: true });
    await mkdir(project, { recursive: true });
    await runNpm('npm pack', ['pack', '--pack-destination', packDir], PACKAGE_DIR);
    const tarballs = (await readdir(packDir)).filter((f) => f.endsWith('.tgz'));
    assert.equal(tarballs.length, 1, `npm pack left one tarball in ${packDir}: ${tarballs.join(', ')}`);
    await writeFile(join(project, 'package.json'), JSON.stringify({ name: 'discovery-consumer', private: true, type: 'module' }, null, 2));
    await npmInstall(project, [join(packDir, tarballs[0] ?? '')]);

    const layout = new EtcdKeyLayout(prefix);
    const encoded = encodeEntry('json', operatorEntry);
    const { registryNamespace: ns, endpoint } = operatorEntry;
    await etcd.put(layout.entry(ns, service, endpoint.instanceId)).value(encoded.value);
    if (encoded.ownerIndex !== undefined) await etcd.put(layout.ownerIndex(ns, service, endpoint.instanceId)).value(encoded.ownerIndex);
  });

  after(async () => {
    await etcd
      .delete()
      .prefix(prefix + '/')
      .catch(() => undefined);
    etcd.close();
    if (workDir !== '') await rm(workDir, { recursive: true, force: true });
  });

  test('brings etcd3 and cockatiel, nothing of the operator, no optional peer and no sources of tests', async () => {
    const installed = await installedPackages(project);
    const names = new Set(installed.map((p) => p.name));
    assert.ok(names.has(PACKAGE_NAME) && names.has('etcd3') && names.has('cockatiel'), `installed: ${[...names].join(', ')}`);

    const root = JSON.parse(await readFile(join(REPO_ROOT, 'package.json'), 'utf8')) as {
      name: string;
      dependencies: Record<string, string>;
    };
    const own = JSON.parse(await readFile(join(PACKAGE_DIR, 'package.json'), 'utf8')) as {
      dependencies: Record<string, string>;
      peerDependencies: Record<string, string>;
    };
    // What the package's own dependencies bring anyway (etcd3 needs protobufjs through
    // @grpc/proto-loader) is not the operator's; every other dependency of the operator is.
    const ownTree = broughtBy(installed, Object.keys(own.dependencies));
    assert.ok(ownTree.has('@grpc/grpc-js'), `etcd3 brings its gRPC client: ${[...ownTree].join(', ')}`);
    const operatorOnly = Object.keys(root.dependencies).filter(
      (d) => !(d in own.dependencies) && !(d in own.peerDependencies) && !ownTree.has(d),
    );
    for (const name of new Set([
      root.name,
      '@kubernetes/client-node',
      'pino',
      'p-queue',
      ...operatorOnly,
      'prom-client',
      'node-zookeeper-client',
    ])) {
      assert.ok(!names.has(name), `${name} must not be installed with ${PACKAGE_NAME}`);
    }

    const packageDir = join(project, 'node_modules', PACKAGE_NAME);
    assert.ok(existsSync(join(packageDir, 'dist/index.js')) && existsSync(join(packageDir, 'dist/index.d.ts')), 'the package holds dist/');
    for (const unwanted of ['test', 'bench', 'tsconfig.build.json'])
      assert.ok(!existsSync(join(packageDir, unwanted)), `${unwanted} is not published`);
  });

  test('registers itself and reads itself and the operator’s instance back through the bed’s etcd, from plain JavaScript', async () => {
    await writeFile(join(project, 'register-and-read.mjs'), REGISTER_AND_READ);
    const port = 20_000 + Math.floor(Math.random() * 10_000);
    const out = lastJsonLine<{ entry: string; registration: string; instances: Instance[]; picked: Instance }>(
      await runScript(project, 'register-and-read.mjs', [prefix, service, String(port)]),
    );
    assert.ok(out.entry.endsWith(`/node_modules/${PACKAGE_NAME}/dist/index.js`), `the main entry point is the built one: ${out.entry}`);
    const self: Instance = { id: `192.0.2.10:${port}`, address: '192.0.2.10', port, weight: 1, tags: { zone: 'a' }, metadata: {} };
    const theOperators: Instance = {
      id: '192.0.2.20:8080',
      address: '192.0.2.20',
      port: 8080,
      weight: 1,
      tags: { zone: 'b' },
      metadata: {},
    };
    assert.deepEqual(
      [...out.instances].sort((a, b) => (a.id ?? '').localeCompare(b.id ?? '')),
      [self, theOperators],
    );
    assert.deepEqual(out.picked, self, 'the zone filter picks the registered instance');

    // Seen above, so it was there: close() must have taken it away again.
    const left = await etcd.getAll().prefix(`${prefix}/`).keys();
    assert.ok(!left.includes(out.registration), `${out.registration} is gone after close(); left: ${left.join(', ')}`);
    assert.ok(left.length > 0, 'the operator’s entry is still there');
  });

  test('with the optional peers installed, the ./prometheus, ./grpc and ./zookeeper entry points load, and calls are counted', async () => {
    const root = JSON.parse(await readFile(join(REPO_ROOT, 'package.json'), 'utf8')) as { dependencies: Record<string, string> };
    const peers = ['prom-client', '@grpc/grpc-js', 'node-zookeeper-client'];
    await npmInstall(
      project,
      peers.map((name) => `${name}@${root.dependencies[name]}`),
    );
    await writeFile(join(project, 'metrics-and-grpc.mjs'), METRICS_AND_GRPC);
    const out = lastJsonLine<{ entries: string[]; grpcExports: string[]; zookeeperExports: string[]; called: string; metrics: string }>(
      await runScript(project, 'metrics-and-grpc.mjs', [prefix, service]),
    );
    assert.deepEqual(
      out.entries.map((e) => e.slice(e.indexOf(`/node_modules/${PACKAGE_NAME}/`))),
      ['index.js', 'observability/prometheus.js', 'grpc/resolver.js', 'zookeeper/index.js'].map(
        (f) => `/node_modules/${PACKAGE_NAME}/dist/${f}`,
      ),
    );
    assert.ok(
      out.grpcExports.includes('registerEtcdResolver'),
      `the gRPC entry point exports registerEtcdResolver: ${out.grpcExports.join(', ')}`,
    );
    assert.ok(
      out.zookeeperExports.includes('zookeeperDiscovery'),
      `the ZooKeeper entry point exports zookeeperDiscovery: ${out.zookeeperExports.join(', ')}`,
    );
    assert.equal(out.called, '192.0.2.20:8080', 'the call went to the operator’s instance, the only one left');
    assert.match(out.metrics, new RegExp(`^discovery_calls_total\\{service="${service}",outcome="success"\\} 1$`, 'm'));
    assert.match(out.metrics, new RegExp(`^discovery_instances\\{service="${service}",state="known"\\} 1$`, 'm'));
  });

  test('a TypeScript consumer type-checks against the declarations of every entry point', async () => {
    await writeFile(join(project, 'typed-consumer.mts'), TYPED_CONSUMER);
    const tsconfig = {
      compilerOptions: { module: 'nodenext', target: 'es2024', strict: true, noEmit: true, skipLibCheck: true, types: [] },
      files: ['typed-consumer.mts'],
    };
    await writeFile(join(project, 'tsconfig.json'), JSON.stringify(tsconfig, null, 2));
    const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
    const listed = await run(
      'tsc in the consumer project',
      process.execPath,
      [tsc, '-p', 'tsconfig.json', '--listFilesOnly'],
      project,
      SCRIPT_TIMEOUT_MS,
    );
    assert.ok(listed.includes(`node_modules/${PACKAGE_NAME}/dist/index.d.ts`), 'the types come from dist/');
    assert.ok(!listed.includes(`node_modules/${PACKAGE_NAME}/src/`), 'not from the sources shipped for source maps');
    await run('tsc in the consumer project', process.execPath, [tsc, '-p', 'tsconfig.json'], project, SCRIPT_TIMEOUT_MS);
  });

  test('everything it installs is under an open-source licence', async (t) => {
    const packages = await installedPackages(project);
    const closed = packages.filter((p) => !isOpenSource(p.license));
    assert.deepEqual(
      closed.map((p) => `${p.path} ${p.version}: ${p.license}`),
      [],
    );
    t.diagnostic(packages.map((p) => `${p.name}@${p.version} ${p.license}`).join(', '));
  });
});
