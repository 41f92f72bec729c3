/**
 * ZooKeeper helpers of the tests: a watcher that sees what a consumer would, and clean-up as the
 * bed's superuser.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import zookeeper from 'node-zookeeper-client';
import { freePort } from '../../testbed/processes.ts';
import { provision } from '../../testbed/provision.ts';
import { ZooKeeperServer } from '../../testbed/zookeeper.ts';
import type { ZooKeeperSession } from '../../src/registry/zookeeper/client.ts';
import { hasZooKeeperCode } from '../../src/registry/zookeeper/errors.ts';
import { bedEnv } from './env.ts';
import { waitFor } from './faults.ts';

/**
 * A third client, node-zookeeper-client used directly, watching nodes the way a consumer would:
 * every event an `exists` watch reports on each path, re-armed after each one.
 */
export class NodeWatcher {
  readonly events: string[] = [];
  readonly #client: zookeeper.Client;
  /** Watches set again after an event and not yet confirmed by the server. */
  readonly #rearming = new Set<Promise<void>>();

  private constructor(client: zookeeper.Client) {
    this.#client = client;
  }

  static async start(): Promise<NodeWatcher> {
    const client = zookeeper.createClient(bedEnv('ZOOKEEPER_CONNECT'), { sessionTimeout: 30_000 });
    await new Promise<void>((resolve) => {
      client.once('connected', () => resolve());
      client.connect();
    });
    return new NodeWatcher(client);
  }

  /** Watches `path` from now on; resolves once the watch is set. */
  watch(path: string): Promise<void> {
    return new Promise((resolve, reject) =>
      this.#client.exists(
        path,
        (event) => {
          this.events.push(`${event.getName()} ${event.getPath()}`);
          const rearm = this.watch(path).catch(() => {});
          this.#rearming.add(rearm);
          void rearm.finally(() => this.#rearming.delete(rearm));
        },
        (error) => (error ? reject(new Error(`cannot watch ${path}: ${String(error)}`)) : resolve()),
      ),
    );
  }

  /**
   * Resolves once every watch set again after an event is in place on the server. ZooKeeper watches
   * fire once: a change made before the new watch is set would go unseen.
   */
  async rearmed(): Promise<void> {
    while (this.#rearming.size > 0) await Promise.all(this.#rearming);
  }

  deletes(path: string): number {
    return this.events.filter((e) => e === `NODE_DELETED ${path}`).length;
  }

  close(): void {
    this.#client.close();
  }
}

/** Deletes a subtree as the bed's superuser, whatever its ACLs. */
export async function removeTree(admin: ZooKeeperSession, path: string): Promise<void> {
  const children = await admin.getChildren(path).catch((err: unknown) => {
    if (hasZooKeeperCode(err, 'NO_NODE')) return [];
    throw err;
  });
  for (const child of children) await removeTree(admin, `${path}/${child}`);
  await admin.remove(path, -1).catch((err: unknown) => {
    if (!hasZooKeeperCode(err, 'NO_NODE')) throw err;
  });
}

/** Waits until `path` no longer exists, as seen by `reader`. */
export async function untilGone(reader: ZooKeeperSession, path: string, timeoutMs: number): Promise<void> {
  await waitFor(`${path} to be deleted`, async () => ((await reader.exists(path)) === undefined ? true : undefined), timeoutMs);
}

/** A ZooKeeper server of a test's own, which it may stop and start again on the same port and data. */
export interface OwnZooKeeper {
  readonly server: ZooKeeperServer;
  /** Stops the server and removes its data. */
  close(): Promise<void>;
}

/** Starts a ZooKeeper of the test's own (the bed's Java and ZooKeeper, a fresh data directory and free port). */
export async function startOwnZooKeeper(name: string): Promise<OwnZooKeeper> {
  const toolchain = await provision(() => undefined);
  const dir = await mkdtemp(join(tmpdir(), `kr-${name}-`));
  const server = new ZooKeeperServer(
    { java: toolchain.java, classpath: toolchain.zookeeperClasspath },
    name,
    dir,
    await freePort(),
    join(dir, 'zookeeper.log'),
  );
  await server.start();
  return {
    server,
    close: async () => {
      await server.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
