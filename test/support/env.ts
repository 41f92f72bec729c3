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

/** The bed's Consul agent as the Consul tests reach it. */
export interface ConsulAgentEnv {
  /** `http://host:port`. */
  readonly address: string;
  /** The ACL token when the agent has ACLs on. */
  readonly token: string | undefined;
}

/**
 * The Consul agent of the bed (CONSUL_HTTP_ADDR, and CONSUL_HTTP_TOKEN when it has ACLs). Throws,
 * saying how to get one, when none is set: these tests need a real agent and never skip.
 */
export function consulAgentEnv(): ConsulAgentEnv {
  const address = bedEnv('CONSUL_HTTP_ADDR');
  const token = process.env['CONSUL_HTTP_TOKEN'];
  return { address: address.startsWith('http') ? address : `http://${address}`, token: token === '' ? undefined : token };
}

/** The client URLs of the bed's registry etcd (ETCD_ENDPOINTS, comma-separated). */
export function bedEtcdEndpoints(): string[] {
  return bedEnv('ETCD_ENDPOINTS')
    .split(',')
    .map((e) => e.trim())
    .filter((e) => e !== '');
}
