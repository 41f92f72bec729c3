/**
 * Credential rotation on real servers, for test/integration/credential-rotation.test.ts: change an
 * etcd user's password with etcdctl, mint a second Consul token with the policies of a first and
 * delete the first, and watch an etcd prefix or a Consul service's health for anything that drops.
 */
import { spawn } from 'node:child_process';
import type { Etcd3, Watcher } from 'etcd3';

/** Changes `userName`'s password with `etcdctl user passwd` (the password goes in on stdin), as `asUser` (`name:password`). */
export async function etcdctlPasswd(
  binary: string,
  endpoint: string,
  userName: string,
  newPassword: string,
  asUser: string,
): Promise<void> {
  const argv = [`--endpoints=${endpoint}`, `--user=${asUser}`, 'user', 'passwd', userName, '--interactive=false'];
  await new Promise<void>((resolveRun, reject) => {
    const child = spawn(binary, argv, { env: { ...process.env, ETCDCTL_API: '3' }, stdio: ['pipe', 'pipe', 'pipe'] });
    let err = '';
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    child.stdout.resume();
    child.on('error', reject);
    child.on('close', (code) =>
      code === 0 ? resolveRun() : reject(new Error(`etcdctl user passwd ${userName} exited with ${String(code)}: ${err.trim()}`)),
    );
    child.stdin.end(`${newPassword}\n`);
  });
}

/** Every put and delete under an etcd prefix, from the moment the watch was created. */
export class EtcdPrefixWatch {
  readonly puts: string[] = [];
  readonly deletes: string[] = [];
  readonly #watcher: Watcher;

  private constructor(watcher: Watcher) {
    this.#watcher = watcher;
    watcher.on('put', (kv) => this.puts.push(kv.key.toString('utf8')));
    watcher.on('delete', (kv) => this.deletes.push(kv.key.toString('utf8')));
  }

  /** Starts watching `prefix` through `client`. */
  static async start(client: Etcd3, prefix: string): Promise<EtcdPrefixWatch> {
    return new EtcdPrefixWatch(await client.watch().prefix(prefix).create());
  }

  /** Stops the watch. */
  async close(): Promise<void> {
    await this.#watcher.cancel();
  }
}

function consulHeaders(token: string): Record<string, string> {
  return { 'X-Consul-Token': token };
}

async function consulJson(address: string, path: string, token: string, method = 'GET', body?: unknown): Promise<unknown> {
  const res = await fetch(`${address}${path}`, {
    method,
    headers: consulHeaders(token),
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    signal: AbortSignal.timeout(10_000),
  });
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${await res.text()}`);
  return res.json();
}

/** A new Consul ACL token with exactly the policies of `token`; resolves its secret. */
export async function cloneConsulToken(address: string, managementToken: string, token: string): Promise<string> {
  const self = (await consulJson(address, '/v1/acl/token/self', token)) as { Policies?: { ID: string }[] };
  const created = (await consulJson(address, '/v1/acl/token', managementToken, 'PUT', {
    Policies: (self.Policies ?? []).map((p) => ({ ID: p.ID })),
  })) as { SecretID: string };
  return created.SecretID;
}

/** Deletes a Consul ACL token, given its secret: from then on Consul refuses it. */
export async function deleteConsulToken(address: string, managementToken: string, token: string): Promise<void> {
  const self = (await consulJson(address, '/v1/acl/token/self', token)) as { AccessorID: string };
  await consulJson(address, `/v1/acl/token/${self.AccessorID}`, managementToken, 'DELETE');
}

/**
 * Follows the passing instances of a Consul service with blocking queries, so every change of the
 * catalog's answer is seen, and remembers each instance that once passed and later did not
 * (deregistered, or its checks no longer passing).
 */
export class ConsulPassingWatch {
  /** `address:port` of every instance ever seen passing. */
  readonly seen = new Set<string>();
  /** Instances that passed once and then dropped out of the passing answer, in order. */
  readonly dropped: string[] = [];
  /** Answers received (the first is the current state). */
  answers = 0;
  /** The last error of a blocking query, if the last one failed. */
  lastError: unknown;
  readonly #abort = new AbortController();
  readonly #loop: Promise<void>;
  /** The passing instances of the last answer. */
  #current = new Set<string>();

  constructor(address: string, service: string, token: string) {
    this.#loop = this.#follow(address, service, token);
  }

  async #follow(address: string, service: string, token: string): Promise<void> {
    let index = '0';
    while (!this.#abort.signal.aborted) {
      try {
        const signal = AbortSignal.any([this.#abort.signal, AbortSignal.timeout(30_000)]);
        const res = await fetch(`${address}/v1/health/service/${encodeURIComponent(service)}?passing=true&index=${index}&wait=5s`, {
          headers: consulHeaders(token),
          signal,
        });
        if (!res.ok) throw new Error(`GET /v1/health/service/${service}: ${res.status} ${await res.text()}`);
        const body = (await res.json()) as { Service: { Address: string; Port: number } }[];
        index = res.headers.get('X-Consul-Index') ?? index;
        const now = new Set(body.map((e) => `${e.Service.Address}:${e.Service.Port}`));
        for (const instance of this.#current) if (!now.has(instance)) this.dropped.push(instance);
        this.#current = now;
        for (const instance of now) this.seen.add(instance);
        this.answers++;
        this.lastError = undefined;
      } catch (err: unknown) {
        if (this.#abort.signal.aborted) return;
        this.lastError = err;
        await new Promise((r) => setTimeout(r, 250));
      }
    }
  }

  /** Stops following. */
  async close(): Promise<void> {
    this.#abort.abort();
    await this.#loop;
  }
}
