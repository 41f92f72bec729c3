/**
 * A standalone ZooKeeper server of the bed, from Debian's `zookeeper` package, run as
 * `java … QuorumPeerMain zoo.cfg` on 127.0.0.1 with a free port and its own data directory
 * (the package's `zookeeperd` only adds an init script for a system-wide daemon on port 2181).
 *
 * - `admin.enableServer=false`: otherwise the Jetty admin server binds port 8080, and a bind
 *   failure there aborts the whole server.
 * - `tickTime=500` with sessions allowed from 1 s to 60 s, so tests can watch a session expire.
 * - A generated superuser (`super:<password>`, ZooKeeper's superDigest), so the tests can clean up
 *   and inspect nodes whatever their ACLs; it is handed to them as ZOOKEEPER_SUPER_AUTH.
 * - The four-letter words `srvr`, `ruok` and `mntr` answer health checks and report the version.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import { ManagedProcess } from './processes.ts';

/** What it takes to run the server: the Java runtime and the package's class path. */
export interface ZooKeeperRuntime {
  readonly java: string;
  /** `zookeeper.jar` (its manifest names its dependencies) and an slf4j binding for the logs. */
  readonly classpath: readonly string[];
}

/** Sends a four-letter word (`srvr`, `ruok`, `mntr`) and resolves the server's whole answer. */
export function fourLetterWord(host: string, port: number, word: string, timeoutMs = 2000): Promise<string> {
  return new Promise((resolveAnswer, reject) => {
    const socket = connect({ host, port });
    let answer = '';
    const timer = setTimeout(
      () => socket.destroy(new Error(`no answer to ${word} from ${host}:${port} within ${timeoutMs} ms`)),
      timeoutMs,
    );
    socket.setEncoding('utf8');
    socket.on('connect', () => socket.end(word));
    socket.on('data', (chunk: string) => (answer += chunk));
    socket.on('close', () => {
      clearTimeout(timer);
      resolveAnswer(answer);
    });
    socket.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

/** A ZooKeeper server that can be stopped and started again on the same port and data. */
export class ZooKeeperServer {
  readonly name: string;
  readonly port: number;
  /** `127.0.0.1:<port>`: a connect string. */
  readonly connectString: string;
  /** `super:<password>`: digest credentials of the superuser. */
  readonly superAuth: string;
  readonly #runtime: ZooKeeperRuntime;
  readonly #dir: string;
  readonly #logFile: string;
  #process: ManagedProcess | undefined;

  constructor(runtime: ZooKeeperRuntime, name: string, dir: string, port: number, logFile: string) {
    this.name = name;
    this.port = port;
    this.connectString = `127.0.0.1:${port}`;
    this.superAuth = `super:${randomBytes(12).toString('hex')}`;
    this.#runtime = runtime;
    this.#dir = dir;
    this.#logFile = logFile;
  }

  /** Writes the configuration (first time), starts the server and waits until it serves. */
  async start(): Promise<void> {
    if (this.#process?.running) return;
    const config = join(this.#dir, 'zoo.cfg');
    await mkdir(join(this.#dir, 'data'), { recursive: true });
    await writeFile(
      config,
      [
        'tickTime=500',
        'minSessionTimeout=1000',
        'maxSessionTimeout=60000',
        `dataDir=${join(this.#dir, 'data')}`,
        'clientPortAddress=127.0.0.1',
        `clientPort=${this.port}`,
        'maxClientCnxns=0',
        'admin.enableServer=false',
        '4lw.commands.whitelist=srvr,ruok,mntr',
        '',
      ].join('\n'),
    );
    const superDigest = `super:${createHash('sha1').update(this.superAuth).digest('base64')}`;
    this.#process = new ManagedProcess(
      this.name,
      this.#runtime.java,
      [
        '-Xmx256m',
        '-XX:+UseSerialGC',
        '-cp',
        this.#runtime.classpath.join(':'),
        '-Dorg.slf4j.simpleLogger.defaultLogLevel=warn',
        `-Dzookeeper.DigestAuthenticationProvider.superDigest=${superDigest}`,
        'org.apache.zookeeper.server.quorum.QuorumPeerMain',
        config,
      ],
      this.#logFile,
    );
    await this.#process.waitUntil(
      'serving',
      async () => (await fourLetterWord('127.0.0.1', this.port, 'srvr')).includes('Mode: standalone'),
      60_000,
    );
  }

  /** Stops the server gracefully; sessions survive a restart within their timeout, as on a real ensemble. */
  async stop(): Promise<void> {
    await this.#process?.stop();
  }

  /** Kills the server as a crash would. */
  async kill(): Promise<void> {
    await this.#process?.kill();
  }

  /**
   * Release reported by the server, e.g. `3.8.0` (Debian's build leaves the rest of the version
   * string, the git id, unexpanded).
   */
  async version(): Promise<string> {
    const answer = await fourLetterWord('127.0.0.1', this.port, 'srvr');
    return /Zookeeper version: (\d+\.\d+\.\d+)/.exec(answer)?.[1] ?? 'unknown';
  }
}
