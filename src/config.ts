/**
 * Operator configuration: command-line flags with environment-variable equivalents, parsed and
 * validated into a typed Config. Only main.ts calls this; nothing else reads flags or process.env.
 */
import { parseArgs } from 'node:util';

/** Log levels pino accepts. */
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
/** A pino log level. */
export type LogLevel = (typeof LOG_LEVELS)[number];

/** The validated configuration of one operator process. */
export interface Config {
  /** Path of a kubeconfig file; undefined means in-cluster, then $KUBECONFIG, then ~/.kube/config. */
  readonly kubeconfig: string | undefined;
  /** Cluster id written as owner of every entry; undefined means the UID of namespace kube-system. */
  readonly clusterId: string | undefined;
  /** Namespaces whose ServiceInstances and pods are watched; empty means all. */
  readonly watchNamespaces: readonly string[];
  readonly leaderElection: boolean;
  readonly leaderElectionNamespace: string;
  readonly leaderElectionId: string;
  readonly leaseDurationSeconds: number;
  readonly renewDeadlineSeconds: number;
  readonly retryPeriodSeconds: number;
  /** host:port of the Prometheus endpoint, or empty to disable. */
  readonly metricsAddress: string;
  /** host:port of /healthz and /readyz, or empty to disable. */
  readonly healthAddress: string;
  /** Reconciles running at once. */
  readonly concurrency: number;
  /** Health probes of static endpoints in flight at most. */
  readonly healthCheckConcurrency: number;
  /** Every ServiceInstance is reconciled at least this often, repairing hand-edited entries. */
  readonly resyncSeconds: number;
  readonly logLevel: LogLevel;
  /** Global dry run: compute and log changes, write nothing to any registry. */
  readonly dryRun: boolean;
  /** Timeout of each registry call. */
  readonly registryTimeoutSeconds: number;
}

/** A flag or environment value that is wrong; the message names it and says what is allowed. */
export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

interface FlagSpec {
  readonly env: string;
  readonly type: 'string' | 'boolean';
  readonly default: string;
  readonly help: string;
}

/** Every flag, its environment variable, default and help text. */
export const FLAGS: Readonly<Record<string, FlagSpec>> = {
  kubeconfig: { env: 'KUBECONFIG', type: 'string', default: '', help: 'kubeconfig file; empty: in-cluster config, else ~/.kube/config' },
  'cluster-id': {
    env: 'REGISTRAR_CLUSTER_ID',
    type: 'string',
    default: '',
    help: 'owner id of this cluster in shared registries; empty: UID of namespace kube-system',
  },
  'watch-namespaces': {
    env: 'REGISTRAR_WATCH_NAMESPACES',
    type: 'string',
    default: '',
    help: 'comma-separated namespaces to watch; empty: all',
  },
  'leader-elect': {
    env: 'REGISTRAR_LEADER_ELECT',
    type: 'boolean',
    default: 'false',
    help: 'elect a leader through a coordination.k8s.io Lease (run several replicas)',
  },
  'leader-election-namespace': {
    env: 'REGISTRAR_LEADER_ELECTION_NAMESPACE',
    type: 'string',
    default: 'kube-registrar',
    help: 'namespace of the leader-election Lease',
  },
  'leader-election-id': {
    env: 'REGISTRAR_LEADER_ELECTION_ID',
    type: 'string',
    default: 'kube-registrar-leader',
    help: 'name of the leader-election Lease',
  },
  'lease-duration': {
    env: 'REGISTRAR_LEASE_DURATION_SECONDS',
    type: 'string',
    default: '15',
    help: 'leader-election lease duration in seconds',
  },
  'renew-deadline': {
    env: 'REGISTRAR_RENEW_DEADLINE_SECONDS',
    type: 'string',
    default: '10',
    help: 'leader-election renew deadline in seconds',
  },
  'retry-period': { env: 'REGISTRAR_RETRY_PERIOD_SECONDS', type: 'string', default: '2', help: 'leader-election retry period in seconds' },
  'metrics-address': { env: 'REGISTRAR_METRICS_ADDRESS', type: 'string', default: ':8080', help: 'host:port for /metrics; empty disables' },
  'health-address': {
    env: 'REGISTRAR_HEALTH_ADDRESS',
    type: 'string',
    default: ':8081',
    help: 'host:port for /healthz and /readyz; empty disables',
  },
  concurrency: {
    env: 'REGISTRAR_CONCURRENCY',
    type: 'string',
    default: '16',
    help: 'reconciles running at once per set of target Registries, so a slow registry never holds up another (writes to one namespace share transactions)',
  },
  'health-check-concurrency': {
    env: 'REGISTRAR_HEALTH_CHECK_CONCURRENCY',
    type: 'string',
    default: '128',
    help: 'health probes of static endpoints in flight at most (the rest wait their turn)',
  },
  'resync-period': {
    env: 'REGISTRAR_RESYNC_SECONDS',
    type: 'string',
    default: '300',
    help: 'seconds between full reconciles of every ServiceInstance (repairs hand-edited entries)',
  },
  'log-level': { env: 'REGISTRAR_LOG_LEVEL', type: 'string', default: 'info', help: `one of ${LOG_LEVELS.join(', ')}` },
  'dry-run': { env: 'REGISTRAR_DRY_RUN', type: 'boolean', default: 'false', help: 'log the changes, write nothing to registries' },
  'registry-timeout': {
    env: 'REGISTRAR_REGISTRY_TIMEOUT_SECONDS',
    type: 'string',
    default: '10',
    help: 'timeout of each registry call in seconds',
  },
  help: { env: '', type: 'boolean', default: 'false', help: 'print this help' },
};

/** The help text listing every flag with its environment variable and default. */
export function usage(): string {
  const lines = ['usage: kube-registrar [flags]', ''];
  for (const [name, f] of Object.entries(FLAGS)) {
    lines.push(
      `  --${name.padEnd(28)} ${f.help}${f.env ? ` (env ${f.env}` : ''}${f.env && f.default ? `, default ${f.default})` : f.env ? ')' : ''}`,
    );
  }
  return lines.join('\n');
}

function parseBool(name: string, v: string): boolean {
  if (['true', '1', 'yes'].includes(v.toLowerCase())) return true;
  if (['false', '0', 'no', ''].includes(v.toLowerCase())) return false;
  throw new ConfigError(`--${name}: expected true or false, got "${v}"`);
}

function parseNumber(name: string, v: string, min: number, max: number): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > max)
    throw new ConfigError(`--${name}: expected a whole number from ${min} to ${max}, got "${v}"`);
  return n;
}

/** Parses argv and env into a Config; throws ConfigError with a message for the user. Returns undefined for --help. */
export function loadConfig(argv: readonly string[], env: Readonly<Record<string, string | undefined>>): Config | undefined {
  // Booleans accept both `--dry-run` and `--dry-run=true`, as Go operators' flags do; so every
  // flag is parsed as a string and a bare boolean flag means true.
  const options = Object.fromEntries(Object.keys(FLAGS).map((name) => [name, { type: 'string' as const }]));
  const args = argv.map((a) => {
    const name = a.startsWith('--') && !a.includes('=') ? a.slice(2) : undefined;
    return name !== undefined && FLAGS[name]?.type === 'boolean' ? `--${name}=true` : a;
  });
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({ args, options, allowPositionals: false, strict: true });
  } catch (err: unknown) {
    throw new ConfigError(`${err instanceof Error ? err.message : String(err)}\n\n${usage()}`);
  }
  const values = parsed.values as Record<string, string | boolean | undefined>;
  if (values['help'] !== undefined && parseBool('help', String(values['help']))) return undefined;
  const get = (name: string): string => {
    const f = FLAGS[name];
    if (!f) throw new Error(`internal: unknown flag ${name}`);
    const v = values[name];
    if (v !== undefined) return String(v);
    const e = f.env ? env[f.env] : undefined;
    return e ?? f.default;
  };
  const logLevel = get('log-level');
  if (!(LOG_LEVELS as readonly string[]).includes(logLevel))
    throw new ConfigError(`--log-level: expected one of ${LOG_LEVELS.join(', ')}, got "${logLevel}"`);
  const watchNamespaces = get('watch-namespaces')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  for (const ns of watchNamespaces) {
    if (!/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(ns)) throw new ConfigError(`--watch-namespaces: "${ns}" is not a valid namespace name`);
  }
  const cfg: Config = {
    kubeconfig: get('kubeconfig') || undefined,
    clusterId: get('cluster-id') || undefined,
    watchNamespaces,
    leaderElection: parseBool('leader-elect', get('leader-elect')),
    leaderElectionNamespace: get('leader-election-namespace'),
    leaderElectionId: get('leader-election-id'),
    leaseDurationSeconds: parseNumber('lease-duration', get('lease-duration'), 2, 3600),
    renewDeadlineSeconds: parseNumber('renew-deadline', get('renew-deadline'), 1, 3600),
    retryPeriodSeconds: parseNumber('retry-period', get('retry-period'), 1, 3600),
    metricsAddress: get('metrics-address'),
    healthAddress: get('health-address'),
    concurrency: parseNumber('concurrency', get('concurrency'), 1, 256),
    healthCheckConcurrency: parseNumber('health-check-concurrency', get('health-check-concurrency'), 1, 4096),
    resyncSeconds: parseNumber('resync-period', get('resync-period'), 1, 86_400),
    logLevel: logLevel as LogLevel,
    dryRun: parseBool('dry-run', get('dry-run')),
    registryTimeoutSeconds: parseNumber('registry-timeout', get('registry-timeout'), 1, 600),
  };
  if (cfg.renewDeadlineSeconds >= cfg.leaseDurationSeconds) throw new ConfigError('--renew-deadline must be shorter than --lease-duration');
  if (cfg.clusterId !== undefined && !/^[A-Za-z0-9][-A-Za-z0-9_.]{0,62}$/.test(cfg.clusterId)) {
    throw new ConfigError(`--cluster-id: "${cfg.clusterId}" must be 1-63 letters, digits, '-', '_' or '.'`);
  }
  return cfg;
}

/** Splits `host:port` (host may be empty for all interfaces). */
export function parseAddress(flag: string, address: string): { host: string | undefined; port: number } {
  const i = address.lastIndexOf(':');
  if (i < 0) throw new ConfigError(`--${flag}: expected host:port or :port, got "${address}"`);
  const host = address.slice(0, i).replace(/^\[|\]$/g, '') || undefined;
  return { host, port: parseNumber(flag, address.slice(i + 1), 0, 65535) };
}
