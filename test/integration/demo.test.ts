/**
 * The README's first command stays true: the demo starts its own bed with its control plane,
 * installs the samples (user-service a Deployment run by kwok), runs the operator and shows the
 * sample entries in etcd and Consul, the health-checked one included, the sample in ZooKeeper, and
 * how to scale and restart the Deployment.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { REPO_ROOT } from '../../testbed/provision.ts';

const execFileAsync = promisify(execFile);

test('the demo registers the Deployment’s pods in etcd and Consul and the static endpoints of dev in etcd, the failing health-checked one left out, and orders in ZooKeeper', async () => {
  const { stdout } = await execFileAsync(process.execPath, [join(REPO_ROOT, 'scripts', 'demo.ts'), '--once'], {
    timeout: 300_000,
    maxBuffer: 16 * 1024 * 1024,
  });
  // The Deployment's two pods, with the IPs kwok gave them (from 10.244.0.0/16).
  const pods = [...stdout.matchAll(/\/services\/prod\/user-service\/(10\.244\.\d+\.\d+):8080 = \{/g)].map((m) => m[1]);
  assert.equal(new Set(pods).size, 2, `the demo shows two user-service entries in etcd:\n${stdout}`);
  const consul = /instances in Consul \(passing\), service prod-user-service:\n((?:\s+\S+\n)+)/.exec(stdout);
  assert.ok(consul, `the demo shows the Consul instances:\n${stdout}`);
  assert.deepEqual(
    (consul[1] ?? '').trim().split(/\s+/).sort(),
    pods.map((ip) => `${ip ?? ''}:8080`).sort(),
    'Consul holds the same two pods',
  );
  assert.match(stdout, /scale deployment user --replicas=4/, 'the demo says how to scale the Deployment');
  assert.match(stdout, /rollout restart deployment user/, 'the demo says how to restart it');
  for (const key of ['/services/dev/billing/10.0.0.12:8080', '/services/dev/billing/10.0.0.13:8080']) {
    assert.ok(stdout.includes(`${key} = {`), `the demo shows ${key}:\n${stdout}`);
  }
  assert.match(stdout, /prod\s+user-service\s+user-service\s+2\/2\s+2/, 'kubectl shows READY 2/2 and REGISTERED 2');
  // orders goes to ZooKeeper in Curator's format, where Spring consumers with root /services/prod find it.
  assert.match(
    stdout,
    /\/services\/prod\/orders\/10\.0\.1\.5:8080 = \{"name":"orders","id":"10\.0\.1\.5:8080","address":"10\.0\.1\.5","port":8080/,
  );
  // The health-checked sample: the endpoint reporting redis down is judged and left out.
  const inventory = /\/services\/dev\/inventory\/127\.0\.0\.1:(\d+) = \{/g;
  const registered = [...stdout.matchAll(inventory)].map((m) => m[1]);
  assert.equal(registered.length, 1, `exactly the healthy inventory endpoint is registered:\n${stdout}`);
  const health = /health of dev\/inventory \(127\.0\.0\.1:(\d+) reports redis down[^\n]*\n\s*(\{.*\})/.exec(stdout);
  assert.ok(health, `the demo shows the health of dev/inventory:\n${stdout}`);
  const summary = JSON.parse(health[2] ?? '{}') as {
    healthy: number;
    unhealthy: number;
    unhealthyEndpoints?: { port: number; lastFailure: string }[];
  };
  assert.equal(summary.healthy, 1);
  assert.equal(summary.unhealthy, 1);
  assert.equal(String(summary.unhealthyEndpoints?.[0]?.port), health[1]);
  assert.match(summary.unhealthyEndpoints?.[0]?.lastFailure ?? '', /redis/);
  assert.notEqual(registered[0], health[1], 'the failing endpoint is not the registered one');
});
