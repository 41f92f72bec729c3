/**
 * A second, ACL-enabled Consul dev agent for tests of tokens and permissions: the bed's own agent
 * runs without ACLs. Started on free ports with the bed's Consul binary and stopped by the test.
 */
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { startConsulAgent, type ConsulAgent } from '../../testbed/bed.ts';
import { provision } from '../../testbed/provision.ts';

/** A running ACL-enabled agent (default policy deny). */
export interface AclConsulAgent {
  /** `http://127.0.0.1:<port>` */
  readonly address: string;
  /** Token with every permission (initial_management; also the agent's own token). */
  readonly managementToken: string;
  /** Creates a token whose only policy is `rules` (HCL), and resolves its secret. */
  createToken(rules: string): Promise<string>;
  /** Stops the agent and removes its log directory. */
  stop(): Promise<void>;
}

/** Starts an ACL-enabled dev agent; the bed's `CONSUL` binary when set, else the provisioned one. */
export async function startAclConsulAgent(): Promise<AclConsulAgent> {
  const binary = process.env['CONSUL'] ?? (await provision()).consul;
  const dir = await mkdtemp(join(tmpdir(), 'kr-consul-acl-'));
  let agent: ConsulAgent;
  try {
    agent = await startConsulAgent(binary, { name: 'acl-test', logFile: join(dir, 'consul.log'), acl: true });
  } catch (err: unknown) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
  const { address } = agent;
  const managementToken = agent.token ?? '';
  const headers = { 'X-Consul-Token': managementToken };
  const stop = async (): Promise<void> => {
    await agent.stop();
    await rm(dir, { recursive: true, force: true });
  };

  return {
    address,
    managementToken,
    async createToken(rules) {
      const put = async (path: string, body: unknown): Promise<Record<string, unknown>> => {
        const res = await fetch(`${address}${path}`, {
          method: 'PUT',
          headers,
          body: JSON.stringify(body),
          signal: AbortSignal.timeout(5000),
        });
        if (!res.ok) throw new Error(`ACL setup ${path} failed: ${res.status} ${await res.text()}`);
        return (await res.json()) as Record<string, unknown>;
      };
      const policy = await put('/v1/acl/policy', { Name: `test-${randomUUID()}`, Rules: rules });
      const token = await put('/v1/acl/token', { Policies: [{ ID: policy['ID'] }] });
      return String(token['SecretID']);
    },
    stop,
  };
}
