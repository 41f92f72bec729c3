/**
 * The operator's Kubernetes client loads KubeConfig from @kubernetes/client-node but neither its
 * generated API and model classes nor undici (src/kube/client.ts), which cost tens of MB for the
 * life of the process. Checked in a fresh process that records every module it loads: if
 * client-node's layout changes so that the hook no longer applies, that code shows up here.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { pathToFileURL } from 'node:url';

const execFileAsync = promisify(execFile);
const SRC = join(import.meta.dirname, '..', '..', 'src');

/** Imports `modules` in a fresh process; returns the URLs of every module it loaded. */
async function modulesLoadedBy(modules: readonly string[]): Promise<string[]> {
  const script = `
    import { registerHooks } from 'node:module';
    const seen = [];
    registerHooks({ load(url, context, next) { seen.push(url); return next(url, context); } });
    for (const m of ${JSON.stringify(modules.map((m) => pathToFileURL(join(SRC, m)).href))}) await import(m);
    const { OperatorKubeConfig } = await import(${JSON.stringify(pathToFileURL(join(SRC, 'kube', 'kube-config.ts')).href)});
    const kc = new OperatorKubeConfig();
    kc.loadFromOptions({
      clusters: [{ name: 'c', server: 'https://127.0.0.1:6443', skipTLSVerify: false }],
      users: [{ name: 'u', token: 't' }],
      contexts: [{ name: 'x', cluster: 'c', user: 'u' }],
      currentContext: 'x',
    });
    if (kc.getCurrentCluster()?.server !== 'https://127.0.0.1:6443') throw new Error('the kubeconfig was not loaded');
    console.log(JSON.stringify(seen));
  `;
  const { stdout } = await execFileAsync(process.execPath, ['--input-type=module', '-e', script]);
  return JSON.parse(stdout.trim().split('\n').pop() ?? '[]') as string[];
}

test("the operator's Kubernetes client loads KubeConfig without client-node's generated API classes or undici", async () => {
  const loaded = await modulesLoadedBy([
    'kube/client.ts',
    'kube/api.ts',
    'kube/informer.ts',
    'kube/custom-objects.ts',
    'kube/events.ts',
    'controller/caches.ts',
    'controller/leader.ts',
  ]);
  const clientNode = loaded.filter((u) => u.includes('/@kubernetes/client-node/'));
  assert.ok(
    clientNode.some((u) => u.endsWith('/dist/config.js')),
    'KubeConfig comes from client-node',
  );
  assert.deepEqual(
    loaded.filter((u) => u.includes('/node_modules/undici/')),
    [],
    'undici is not loaded (requests and watches go over node:https)',
  );
  const generated = clientNode.filter((u) =>
    /\/dist\/gen\/(models|types)\/|\/dist\/gen\/apis\/(?!exception\.js)|\/dist\/gen\/index\.js/.test(u),
  );
  assert.deepEqual(generated, [], 'no generated API or model module is loaded');
});
