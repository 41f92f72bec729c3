/**
 * `npm run testbed -- <command>`: run the test bed by hand.
 *
 *   provision   build or install every server binary (idempotent; cached by version)
 *   up          start the bed in the background and write .testbed/env
 *   down        stop a bed started with `up`
 *   env         print .testbed/env
 *   run         start the bed in the foreground until Ctrl-C
 */
import { spawn } from 'node:child_process';
import { existsSync, openSync } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { startBed, type Bed } from './bed.ts';
import { provision, REPO_ROOT } from './provision.ts';

const STATE_DIR = join(REPO_ROOT, '.testbed');
const ENV_FILE = join(STATE_DIR, 'env');
const PID_FILE = join(STATE_DIR, 'pid');
const LOG_FILE = join(STATE_DIR, 'bed.log');

/** Formats the bed's environment as shell `KEY=value` lines. */
export function envFileText(env: Readonly<Record<string, string>>): string {
  return Object.entries(env)
    .map(([k, v]) => `${k}=${v}`)
    .join('\n')
    .concat('\n');
}

/** Prints how to reach a running bed. */
export function describeBed(bed: Bed): string {
  return [
    `test bed up: kube-apiserver ${bed.versions.kubernetes}, etcd ${bed.versions.etcd}, Consul ${bed.versions.consul}, ZooKeeper ${bed.versions.zookeeper}, helm ${bed.versions.helm}`,
    `  kube-apiserver  ${bed.apiserverUrl}`,
    `  registry etcd   ${bed.registryEtcd.clientUrl}`,
    `  consul          ${bed.consulAddr}`,
    `  zookeeper       ${bed.zookeeper.connectString}`,
    `  data and logs   ${bed.dir}`,
  ].join('\n');
}

/** Runs the bed until a signal arrives, then stops it; `onUp` runs once it is healthy. */
export async function runUntilSignal(onUp: (bed: Bed) => Promise<void>): Promise<void> {
  const bed = await startBed();
  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => (stopping ??= bed.stop());
  const signals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
  const stopped = new Promise<void>((resolveStop) => {
    for (const s of signals) process.once(s, () => void stop().then(resolveStop));
  });
  try {
    await onUp(bed);
  } catch (err: unknown) {
    await stop();
    throw err;
  }
  await stopped;
}

async function readPid(): Promise<number | undefined> {
  try {
    const pid = Number((await readFile(PID_FILE, 'utf8')).trim());
    process.kill(pid, 0);
    return pid;
  } catch {
    return undefined;
  }
}

async function up(): Promise<void> {
  const running = await readPid();
  if (running !== undefined && existsSync(ENV_FILE)) {
    console.log(`test bed already running (pid ${running}); environment in ${ENV_FILE}`);
    return;
  }
  await mkdir(STATE_DIR, { recursive: true });
  await rm(ENV_FILE, { force: true });
  // Provision in the foreground so build progress is visible.
  await provision();
  const out = openSync(LOG_FILE, 'w');
  const child = spawn(process.execPath, [join(REPO_ROOT, 'testbed', 'cli.ts'), 'serve'], { detached: true, stdio: ['ignore', out, out] });
  child.unref();
  await writeFile(PID_FILE, `${String(child.pid)}\n`);
  for (;;) {
    if (existsSync(ENV_FILE)) break;
    if (child.exitCode !== null || (await readPid()) === undefined) {
      throw new Error(`test bed failed to start; log ${LOG_FILE}:\n${await readFile(LOG_FILE, 'utf8')}`);
    }
    await sleep(200);
  }
  console.log((await readFile(LOG_FILE, 'utf8')).trim());
  console.log(
    `\nenvironment written to ${ENV_FILE}; use it with:\n  set -a; . ${ENV_FILE}; set +a\n  $KUBECTL get ns; $ETCDCTL --endpoints=$ETCD_ENDPOINTS endpoint status; $CONSUL members`,
  );
}

async function down(): Promise<void> {
  const pid = await readPid();
  if (pid === undefined) {
    console.log('no test bed running');
  } else {
    process.kill(pid, 'SIGTERM');
    for (let i = 0; i < 300; i++) {
      try {
        process.kill(pid, 0);
      } catch {
        break;
      }
      await sleep(100);
    }
    console.log(`test bed (pid ${pid}) stopped`);
  }
  await rm(PID_FILE, { force: true });
  await rm(ENV_FILE, { force: true });
}

async function main(argv: readonly string[]): Promise<void> {
  const command = argv[0] ?? 'help';
  switch (command) {
    case 'provision': {
      const t = await provision();
      console.log(
        `kube-apiserver ${t.kubernetesVersion}  ${t.kubeApiserver}\nkube-controller-manager ${t.kubernetesVersion}  ${t.kubeControllerManager}\nkube-scheduler ${t.kubernetesVersion}  ${t.kubeScheduler}\nkwok           ${t.kwokVersion}  ${t.kwok}\nkubectl        ${t.kubernetesVersion}  ${t.kubectl}\netcd           ${t.etcdVersion}  ${t.etcd}\nconsul         ${t.consulVersion}  ${t.consul}\nhelm           ${t.helmVersion}  ${t.helm}\ngrpc-go probe  ${t.grpcGoVersion}  ${t.grpcResolverProbe}\nzookeeper      ${t.zookeeperVersion}  ${t.zookeeperClasspath.join(':')} (${t.java})\nzk java reader ${t.curatorVersion}  ${t.zookeeperJavaReader}`,
      );
      return;
    }
    case 'up':
      return up();
    case 'down':
      return down();
    case 'env':
      process.stdout.write(await readFile(ENV_FILE, 'utf8'));
      return;
    case 'serve':
      return runUntilSignal(async (bed) => {
        await writeFile(ENV_FILE, envFileText(bed.env));
        console.log(describeBed(bed));
      });
    case 'run':
      return runUntilSignal(async (bed) => {
        console.log(describeBed(bed));
        console.log(`\nenvironment:\n${envFileText(bed.env)}Ctrl-C stops the bed.`);
        await Promise.resolve();
      });
    default:
      console.log('usage: npm run testbed -- provision | up | down | env | run');
      if (command !== 'help') process.exitCode = 2;
  }
}

main(process.argv.slice(2)).catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : err);
  process.exitCode = 1;
});
