/**
 * The container image without a container engine: the Dockerfile passes hadolint, and the operator
 * built to dist/ with production dependencies only runs a lifecycle on the bed exactly as the
 * image's entrypoint would (`node dist/main.js`, non-root).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { cp, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { promisify } from 'node:util';
import { Etcd3 } from 'etcd3';
import { freePort, ManagedProcess } from '../../testbed/processes.ts';
import { REPO_ROOT } from '../../testbed/provision.ts';
import { RUNTIME_ENV, RUNTIME_NODE_FLAGS } from '../../src/runtime-settings.ts';
import { adminKubeConfig, bedEnv, uniqueSuffix } from '../support/env.ts';
import {
  createNamespace,
  createRegistry,
  createServiceInstance,
  deleteServiceInstance,
  eventually,
  getServiceInstance,
  installCrds,
} from '../support/kube.ts';

const execFileAsync = promisify(execFile);
const cleanup: (() => Promise<void>)[] = [];
after(async () => {
  for (const c of cleanup.reverse()) await c();
});

test('the Dockerfile passes hadolint', async () => {
  const { stdout, stderr } = await execFileAsync(bedEnv('HADOLINT'), ['--failure-threshold', 'info', join(REPO_ROOT, 'Dockerfile')]).catch(
    (err: unknown) => {
      const e = err as { stdout?: string; stderr?: string };
      assert.fail(`hadolint found problems:\n${e.stdout ?? ''}${e.stderr ?? ''}`);
    },
  );
  assert.equal(stdout + stderr, '');
  const dockerfile = await readFile(join(REPO_ROOT, 'Dockerfile'), 'utf8');
  assert.match(dockerfile, /npm ci --omit=dev/, 'the runtime gets production dependencies only');
  assert.match(dockerfile, /^USER 65532/m, 'the image runs as a non-root user');
  assert.match(dockerfile, /^FROM [^\n]*(node:24|nodejs24)[^\n]*$/m, 'the base is Node 24');
  const env = new Map(
    [...(/^ENV (.*)$/m.exec(dockerfile)?.[1] ?? '').matchAll(/(\w+)=(?:"([^"]*)"|(\S+))/g)].map((m) => [m[1], m[2] ?? m[3]]),
  );
  for (const [name, value] of Object.entries(RUNTIME_ENV))
    assert.equal(env.get(name), value, `the image sets ${name} as src/runtime-settings.ts says`);
  const entrypoint = JSON.parse(/^ENTRYPOINT (.*)$/m.exec(dockerfile)?.[1] ?? '[]') as string[];
  assert.deepEqual(
    entrypoint,
    ['/nodejs/bin/node', ...RUNTIME_NODE_FLAGS, 'dist/main.js'],
    'the image passes node the flags src/runtime-settings.ts says',
  );
});

test('the operator built to dist/ runs a lifecycle from production dependencies only', async () => {
  // Build as the Dockerfile's build stage does, into a scratch copy that has only what the image has.
  const app = await mkdtemp(join(tmpdir(), 'kube-registrar-image-'));
  cleanup.push(() => rm(app, { recursive: true, force: true }));
  await execFileAsync(
    process.execPath,
    [
      join(REPO_ROOT, 'node_modules', 'typescript', 'bin', 'tsc'),
      '-p',
      join(REPO_ROOT, 'tsconfig.build.json'),
      '--outDir',
      join(app, 'dist'),
    ],
    { cwd: REPO_ROOT },
  );
  await cp(join(REPO_ROOT, 'package.json'), join(app, 'package.json'));
  await cp(join(REPO_ROOT, 'package-lock.json'), join(app, 'package-lock.json'));
  // The runtime stage's install, served from npm's cache where it can be.
  await execFileAsync('npm', ['ci', '--omit=dev', '--ignore-scripts', '--prefer-offline', '--no-audit', '--no-fund'], {
    cwd: app,
    timeout: 300_000,
  });
  const { stdout } = await execFileAsync(process.execPath, [join(app, 'dist', 'main.js'), '--help'], { cwd: app });
  assert.match(stdout, /--leader-elect/);

  const kc = adminKubeConfig();
  const sfx = uniqueSuffix();
  const ns = `img-${sfx}`;
  const prefix = `/image-${sfx}`;
  await installCrds(kc);
  await createNamespace(kc, ns, { img: sfx });
  await createRegistry(kc, `img-${sfx}`, {
    type: 'etcd',
    default: true,
    namespaceSelector: { matchLabels: { img: sfx } },
    etcd: { endpoints: [bedEnv('ETCD_ENDPOINTS')], prefix },
  });
  const health = await freePort();
  const op = new ManagedProcess(
    'kube-registrar-dist',
    process.execPath,
    [
      ...RUNTIME_NODE_FLAGS,
      join(app, 'dist', 'main.js'),
      `--kubeconfig=${bedEnv('KUBECONFIG')}`,
      `--health-address=127.0.0.1:${health}`,
      `--metrics-address=127.0.0.1:${await freePort()}`,
      `--watch-namespaces=${ns}`,
    ],
    join(app, 'operator.log'),
    { ...process.env, NODE_ENV: 'production', ...RUNTIME_ENV },
  );
  cleanup.push(() => op.stop());
  await op.waitUntil('ready', async () => (await fetch(`http://127.0.0.1:${health}/readyz`)).ok, 60_000);
  // With the image's flags the collector is there, and the operator compacts its heap once the
  // initial sync converged (nothing to sync here: at once).
  await eventually('the heap compacted after the initial sync', async () => {
    const line = (await readFile(join(app, 'operator.log'), 'utf8')).split('\n').find((l) => l.includes('heap compacted'));
    return line ? (JSON.parse(line) as { heapReservedMB: number[] }) : undefined;
  });
  const etcd = new Etcd3({ hosts: bedEnv('ETCD_ENDPOINTS').split(',') });
  cleanup.push(async () => etcd.close());
  await createServiceInstance(kc, ns, 'web', { service: 'web', endpoints: [{ address: '192.0.2.100', port: 443 }] });
  const key = `${prefix}/${ns}/web/192.0.2.100:443`;
  await eventually('the entry written by the dist/ build', async () => ((await etcd.get(key).string()) ? true : undefined));
  await deleteServiceInstance(kc, ns, 'web');
  await eventually('the entry and the object to be gone', async () =>
    (await etcd.get(key).string()) === null && (await getServiceInstance(kc, ns, 'web')) === undefined ? true : undefined,
  );
});
