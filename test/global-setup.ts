/**
 * Global setup of `npm test`: starts one test bed for every test file and hands its environment
 * (KUBECONFIG, ETCD_ENDPOINTS, CONSUL_HTTP_ADDR, ...) to them through process.env, which the test
 * runner's child processes inherit. Set KUBE_REGISTRAR_TESTBED_ENV to a `.testbed/env` file to run
 * the tests against a bed started by hand with `npm run testbed -- up` instead.
 */
import { readFile } from 'node:fs/promises';
import { startBed, type Bed } from '../testbed/bed.ts';
import { describeOpenResources } from './support/open-resources.ts';

/**
 * How long the runner may take to exit once the bed is stopped. The runner sets no deadline of its
 * own there, so a handle left open would hang `npm test` after its last line of output.
 */
const EXIT_GRACE_MS = 20_000;

let bed: Bed | undefined;

/** Starts the bed (or adopts a running one) before any test file runs. */
export async function globalSetup(): Promise<void> {
  const envFile = process.env['KUBE_REGISTRAR_TESTBED_ENV'];
  if (envFile) {
    for (const line of (await readFile(envFile, 'utf8')).split('\n')) {
      const i = line.indexOf('=');
      if (i > 0) process.env[line.slice(0, i)] = line.slice(i + 1);
    }
    console.log(`test bed: reusing ${envFile}`);
    return;
  }
  const started = Date.now();
  bed = await startBed({ log: (l) => console.log(l) });
  Object.assign(process.env, bed.env);
  console.log(
    `test bed: kube-apiserver ${bed.versions.kubernetes}, etcd ${bed.versions.etcd}, Consul ${bed.versions.consul}, ZooKeeper ${bed.versions.zookeeper}, helm ${bed.versions.helm} ` +
      `up in ${((Date.now() - started) / 1000).toFixed(1)} s (${bed.dir})`,
  );
}

/** Stops the bed after the last test file, then makes sure the runner exits. */
export async function globalTeardown(): Promise<void> {
  await bed?.stop();
  setTimeout(() => {
    console.error(
      `test runner still alive ${EXIT_GRACE_MS} ms after the test bed stopped: something left open keeps it running:\n${describeOpenResources()}`,
    );
    process.exit(1);
  }, EXIT_GRACE_MS).unref();
}
