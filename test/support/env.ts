/**
 * Access to the test bed from a test file: the servers' addresses come from the environment that
 * the global setup (or `npm run testbed -- up`) provides. A missing variable fails the test with a
 * message that says how to get a bed; it never skips.
 */
import { KubeConfig } from '@kubernetes/client-node';

/** Returns an environment variable the bed sets, or throws saying how to start the bed. */
export function bedEnv(name: string): string {
  const value = process.env[name];
  if (!value) {
    throw new Error(
      `${name} is not set: run the tests with \`npm test\` (its global setup starts the test bed), or start one with \`npm run testbed -- up\` and set KUBE_REGISTRAR_TESTBED_ENV=.testbed/env`,
    );
  }
  return value;
}

/** A KubeConfig for the bed's admin user. */
export function adminKubeConfig(): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromFile(bedEnv('KUBECONFIG'));
  return kc;
}

/** A random suffix for names that must not collide across tests and runs. */
export function uniqueSuffix(): string {
  return Math.random().toString(36).slice(2, 8);
}
