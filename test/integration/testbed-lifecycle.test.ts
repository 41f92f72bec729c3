/**
 * The bed cleans up after itself: Ctrl-C (SIGINT) on `npm run testbed -- run` stops every server,
 * frees every port and removes the data directory; a SIGKILLed bed takes its servers with it.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { basename, join } from 'node:path';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { REPO_ROOT } from '../../testbed/provision.ts';

interface RunningBed {
  readonly child: ChildProcess;
  readonly env: Record<string, string>;
  readonly exited: Promise<number | null>;
}

async function startForegroundBed(): Promise<RunningBed> {
  const child = spawn(process.execPath, [join(REPO_ROOT, 'testbed', 'cli.ts'), 'run'], { stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise<number | null>((resolveExit) => child.on('exit', (code) => resolveExit(code)));
  let out = '';
  child.stdout?.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr?.on('data', (c: Buffer) => (out += c.toString()));
  for (let i = 0; !out.includes('Ctrl-C stops the bed.'); i++) {
    if (child.exitCode !== null) assert.fail(`bed exited early:\n${out}`);
    if (i > 1800) assert.fail(`bed did not come up in 180 s:\n${out}`);
    await sleep(100);
  }
  const env: Record<string, string> = {};
  for (const line of out.split('\n')) {
    const m = /^([A-Z_]+)=(.*)$/.exec(line);
    if (m?.[1] && m[2] !== undefined) env[m[1]] = m[2];
  }
  return { child, env, exited };
}

function portOf(url: string): number {
  return Number(new URL(url).port);
}

async function portOpen(port: number): Promise<boolean> {
  return new Promise((resolveOpen) => {
    const socket = connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolveOpen(true);
    });
    socket.once('error', () => resolveOpen(false));
  });
}

/** Pids of live processes whose command line mentions `needle`. */
function processesMentioning(needle: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8');
      if (cmdline.includes(needle)) pids.push(Number(entry));
    } catch {
      // Gone meanwhile.
    }
  }
  return pids;
}

async function bedPorts(env: Record<string, string>): Promise<number[]> {
  const kubeconfig = readFileSync(env['KUBECONFIG'] ?? '', 'utf8');
  const server = /server: (\S+)/.exec(kubeconfig)?.[1] ?? '';
  return [
    portOf(server),
    portOf(env['ETCD_ENDPOINTS'] ?? ''),
    portOf(env['CONSUL_HTTP_ADDR'] ?? ''),
    portOf(`tcp://${env['ZOOKEEPER_CONNECT'] ?? ''}`),
  ];
}

test('Ctrl-C stops every server, frees every port and removes the data directory', async () => {
  const bed = await startForegroundBed();
  const dir = bed.env['TESTBED_DIR'] ?? '';
  assert.ok(existsSync(dir), 'the bed has a data directory while it runs');
  const ports = await bedPorts(bed.env);
  for (const port of ports) assert.equal(await portOpen(port), true, `port ${port} answers while the bed runs`);
  assert.ok(
    processesMentioning(basename(dir)).length >= 4,
    'two etcds, kube-apiserver and Consul run with the bed directory name on their command line',
  );

  bed.child.kill('SIGINT');
  assert.equal(await bed.exited, 0, 'the bed exits cleanly on SIGINT');
  for (const port of ports) assert.equal(await portOpen(port), false, `port ${port} is free after Ctrl-C`);
  assert.deepEqual(processesMentioning(basename(dir)), [], 'no server outlives the bed');
  assert.equal(existsSync(dir), false, 'the data directory is removed');
});

test('a SIGKILLed bed takes its servers with it', async () => {
  const bed = await startForegroundBed();
  const dir = bed.env['TESTBED_DIR'] ?? '';
  const ports = await bedPorts(bed.env);
  bed.child.kill('SIGKILL');
  await bed.exited;
  // The kernel delivers the parent-death signal; give the servers a moment to exit.
  for (let i = 0; i < 100 && processesMentioning(basename(dir)).length > 0; i++) await sleep(100);
  assert.deepEqual(processesMentioning(basename(dir)), [], 'no server outlives a killed bed');
  for (const port of ports) {
    for (let i = 0; i < 50 && (await portOpen(port)); i++) await sleep(100);
    assert.equal(await portOpen(port), false, `port ${port} is free`);
  }
});
