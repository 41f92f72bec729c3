/**
 * The README's first command stays true: the demo starts its own bed, installs the samples, runs
 * the operator and shows the four sample entries in etcd.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { REPO_ROOT } from '../../testbed/provision.ts';

const execFileAsync = promisify(execFile);

test('the demo registers the sample pods of prod and the static endpoints of dev in etcd', async () => {
  const { stdout } = await execFileAsync(process.execPath, [join(REPO_ROOT, 'scripts', 'demo.ts'), '--once'], {
    timeout: 240_000,
    maxBuffer: 16 * 1024 * 1024,
  });
  for (const key of [
    '/services/prod/user-service/10.244.0.10:8080',
    '/services/prod/user-service/10.244.0.11:8080',
    '/services/dev/billing/10.0.0.12:8080',
    '/services/dev/billing/10.0.0.13:8080',
  ]) {
    assert.ok(stdout.includes(`${key} = {`), `the demo shows ${key}:\n${stdout}`);
  }
  assert.match(stdout, /prod\s+user-service\s+user-service\s+2\/2\s+2/, 'kubectl shows READY 2/2 and REGISTERED 2');
});
