/**
 * Child processes of the bed: free loopback ports, start with output to a log file, wait until
 * healthy, and stop (SIGTERM, then SIGKILL) so that no process or port is left behind.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { request, type RequestOptions } from 'node:https';
import { createServer } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

/**
 * util-linux's setpriv makes the kernel kill a server when the process that started it dies, even
 * by SIGKILL, so a killed test run leaves no orphans behind.
 */
const SETPRIV = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => existsSync(p));

/** Returns a port that is free on 127.0.0.1 right now. */
export async function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolvePort(port));
    });
  });
}

/**
 * `count` distinct free ports, none of them in `exclude`. Each `freePort()` call releases its port
 * before returning, so two calls may return the same one: a process given both would fail to
 * start (Consul refuses equal Serf LAN and WAN ports).
 */
export async function freePorts(count: number, exclude: readonly number[] = []): Promise<number[]> {
  const ports = new Set<number>();
  while (ports.size < count) {
    const port = await freePort();
    if (!exclude.includes(port)) ports.add(port);
  }
  return [...ports];
}

/** A running child process of the bed. */
export class ManagedProcess {
  readonly name: string;
  readonly logFile: string;
  readonly #child: ChildProcess;
  readonly #exited: Promise<number | null>;
  #exitCode: number | null | undefined;

  constructor(name: string, command: string, args: readonly string[], logFile: string, env: NodeJS.ProcessEnv = process.env) {
    this.name = name;
    this.logFile = logFile;
    const out = createWriteStream(logFile, { flags: 'a' });
    const [cmd, argv] = SETPRIV ? [SETPRIV, ['--pdeathsig', 'SIGKILL', '--', command, ...args]] : [command, [...args]];
    this.#child = spawn(cmd, argv, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    this.#child.stdout?.pipe(out);
    this.#child.stderr?.pipe(out);
    this.#exited = new Promise((resolveExit) => {
      this.#child.on('exit', (code, signal) => {
        this.#exitCode = code ?? (signal ? -1 : null);
        resolveExit(this.#exitCode);
      });
      this.#child.on('error', (err) => {
        out.write(`spawn error: ${err.message}\n`);
        this.#exitCode = -1;
        resolveExit(-1);
      });
    });
  }

  /** Process id (undefined if spawning failed). */
  get pid(): number | undefined {
    return this.#child.pid;
  }

  /** True while the process runs. */
  get running(): boolean {
    return this.#exitCode === undefined;
  }

  /** Last lines of the log, for error messages. */
  async logTail(lines = 30): Promise<string> {
    try {
      return (await readFile(this.logFile, 'utf8')).split('\n').slice(-lines).join('\n');
    } catch {
      return '';
    }
  }

  /** Polls `check` until it resolves true; fails early if the process dies. */
  async waitUntil(what: string, check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let lastError: unknown;
    while (Date.now() < deadline) {
      if (!this.running)
        throw new Error(
          `${this.name} exited (code ${String(this.#exitCode)}) before it was ${what}; log ${this.logFile}:\n${await this.logTail()}`,
        );
      try {
        if (await check()) return;
      } catch (err: unknown) {
        lastError = err;
      }
      await sleep(100);
    }
    throw new Error(`${this.name} was not ${what} within ${timeoutMs} ms; log ${this.logFile}:\n${await this.logTail()}`, {
      cause: lastError,
    });
  }

  /** Sends a signal to the process. */
  signal(sig: NodeJS.Signals): void {
    if (!this.running || this.#child.pid === undefined) return;
    try {
      process.kill(this.#child.pid, sig);
    } catch {
      // Already gone.
    }
  }

  /** Stops the process: SIGTERM, then SIGKILL after `graceMs`. */
  async stop(graceMs = 5000): Promise<void> {
    if (!this.running) return;
    this.signal('SIGTERM');
    const timer = setTimeout(() => this.signal('SIGKILL'), graceMs);
    try {
      await this.#exited;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Kills the process at once (SIGKILL), as a crash would. */
  async kill(): Promise<void> {
    this.signal('SIGKILL');
    await this.#exited;
  }
}

/** GETs a URL and reports whether it answered 2xx, optionally checking the body. */
export async function httpOk(url: string, init?: RequestInit & { bodyIncludes?: string }): Promise<boolean> {
  const res = await fetch(url, { ...init, signal: AbortSignal.timeout(2000) });
  const body = await res.text();
  return res.ok && (init?.bodyIncludes === undefined || body.includes(init.bodyIncludes));
}

/**
 * GET over TLS with the given client options (a CA and client certificate, or
 * `rejectUnauthorized: false` for a component's self-signed serving certificate); 3-s deadline.
 */
export function httpsGet(
  url: string,
  tls: Pick<RequestOptions, 'ca' | 'cert' | 'key' | 'rejectUnauthorized'>,
): Promise<{ status: number; body: string }> {
  return new Promise((resolveGet, reject) => {
    const req = request(url, { ...tls, timeout: 3000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolveGet({ status: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error(`timeout GET ${url}`)));
    req.on('error', reject);
    req.end();
  });
}

/** Creates a directory and its parents; resolves its path. */
export async function mkdirp(path: string): Promise<string> {
  await mkdir(path, { recursive: true });
  return path;
}
