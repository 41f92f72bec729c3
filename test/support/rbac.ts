/**
 * The chart's RBAC contract and the helpers that check it: rendering the chart, the permissions
 * the operator needs (one entry per API call it makes), and, on the bed, tokens for a
 * ServiceAccount and the permissions the apiserver actually grants to it.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AuthorizationV1Api, CoreV1Api, KubeConfig, type V1PolicyRule } from '@kubernetes/client-node';
import { loadAll } from 'js-yaml';
import { helmTemplate, type HelmTool } from '../../scripts/render-manifests.ts';

/** A Kubernetes object as rendered by the chart. */
export interface Manifest {
  readonly apiVersion: string;
  readonly kind: string;
  readonly metadata: { readonly name: string; readonly namespace?: string; readonly labels?: Record<string, string> };
  readonly [field: string]: unknown;
}

/** A release to render: name, namespace and values (written to a temporary values file). */
export interface Release {
  readonly name: string;
  readonly namespace: string;
  readonly values?: Record<string, unknown>;
}

/** Renders the chart and parses every document. */
export async function renderChart(tool: HelmTool, release: Release): Promise<Manifest[]> {
  return parseManifests(await renderChartText(tool, release));
}

/** Renders the chart to YAML text. */
export async function renderChartText(tool: HelmTool, release: Release): Promise<string> {
  const args: string[] = [];
  if (release.values) {
    const file = join(await mkdtemp(join(tmpdir(), 'kr-values-')), 'values.json');
    // JSON is YAML, and it spares the test a YAML writer.
    await writeFile(file, JSON.stringify(release.values));
    args.push('--values', file);
  }
  return helmTemplate(tool, release, args);
}

/** Parses multi-document YAML, dropping empty documents. */
export function parseManifests(yaml: string): Manifest[] {
  return loadAll(yaml).filter((d): d is Manifest => typeof d === 'object' && d !== null && 'kind' in d);
}

/** Objects of the given kinds, in order. */
export function ofKind(manifests: readonly Manifest[], ...kinds: string[]): Manifest[] {
  return manifests.filter((m) => kinds.includes(m.kind));
}

/** The kinds that make up the operator's identity and permissions. */
export const RBAC_KINDS = ['ServiceAccount', 'ClusterRole', 'ClusterRoleBinding', 'Role', 'RoleBinding'] as const;

/**
 * A permission as one string, `<group>/<resource>[<name>]:<verb>` with `core` for the core group,
 * e.g. `core/namespaces[kube-system]:get`. Rules expand into these so that two ways of writing
 * the same grant compare equal.
 */
export type Permission = string;

/** Expands policy rules into sorted, de-duplicated permissions. */
export function permissions(rules: readonly V1PolicyRule[]): Permission[] {
  const out = new Set<Permission>();
  for (const r of rules) {
    if (!r.resources) continue; // nonResourceURLs are not ours
    const names = r.resourceNames && r.resourceNames.length > 0 ? r.resourceNames : [undefined];
    for (const g of r.apiGroups ?? [''])
      for (const res of r.resources)
        for (const name of names)
          for (const verb of r.verbs) out.add(`${g === '' ? 'core' : g}/${res}${name === undefined ? '' : `[${name}]`}:${verb}`);
  }
  return [...out].sort();
}

/**
 * What the operator needs, by where it is granted. Each line is an API call in src/: keep this
 * table, the chart and the code in step (test/unit/chart.test.ts compares the chart to it).
 */
export const OPERATOR_PERMISSIONS = {
  /** ClusterRole `<release>`, bound cluster-wide. */
  cluster: [
    // Registry informer and Registry status (controller/manager.ts; Registry status writes).
    'registrar.dev/registries:list',
    'registrar.dev/registries:watch',
    'registrar.dev/registries/status:patch',
    // Namespace informer: Registry namespaceSelectors (controller/manager.ts).
    'core/namespaces:list',
    'core/namespaces:watch',
    // Default cluster id: the UID of kube-system (main.ts); absent when operator.clusterId is set.
    'core/namespaces[kube-system]:get',
    // Events, folded into counts by patch (kube/events.ts).
    'core/events:create',
    'core/events:patch',
  ],
  /** ClusterRole `<release>-workloads`, bound cluster-wide or per watched namespace. */
  workloads: [
    // ServiceInstance informer and finalizer (controller/manager.ts, kube/custom-objects.ts).
    'registrar.dev/serviceinstances:list',
    'registrar.dev/serviceinstances:watch',
    'registrar.dev/serviceinstances:patch',
    'registrar.dev/serviceinstances/status:patch',
    // Pod informer (controller/manager.ts).
    'core/pods:list',
    'core/pods:watch',
  ],
  /** Role `<release>-leader-election` in the release namespace (controller/leader.ts). */
  leaderElection: (leaseName: string): Permission[] => [
    'coordination.k8s.io/leases:create',
    `coordination.k8s.io/leases[${leaseName}]:get`,
    `coordination.k8s.io/leases[${leaseName}]:update`,
  ],
  /** Role `<release>-credentials` in each credentials namespace (registry/provider.ts). */
  credentials: ['core/secrets:get'],
} as const;

/** Runs a command with `input` on stdin; rejects with its stderr when it fails. */
export async function run(cmd: string, args: readonly string[], input = ''): Promise<string> {
  return new Promise((resolveRun, reject) => {
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.on('error', reject);
    child.on('close', (code) =>
      code === 0 ? resolveRun(stdout) : reject(new Error(`${cmd} ${args.join(' ')} exited with ${String(code)}: ${stderr.trim()}`)),
    );
    child.stdin.end(input);
  });
}

/** `kubectl apply -f -` of `manifests` with the admin kubeconfig; `extra` adds flags. */
export async function kubectlApply(
  kubectl: string,
  kubeconfig: string,
  manifests: readonly Manifest[] | string,
  extra: readonly string[] = [],
): Promise<string> {
  const input = typeof manifests === 'string' ? manifests : manifests.map((m) => JSON.stringify(m)).join('\n---\n');
  return run(kubectl, ['--kubeconfig', kubeconfig, 'apply', '-f', '-', ...extra], input);
}

/** Mints a token for a ServiceAccount through the TokenRequest API, as the kubelet would. */
export async function mintToken(admin: KubeConfig, namespace: string, serviceAccount: string): Promise<string> {
  const res = await admin
    .makeApiClient(CoreV1Api)
    .createNamespacedServiceAccountToken({ name: serviceAccount, namespace, body: { spec: { audiences: [], expirationSeconds: 3600 } } });
  const token = res.status?.token;
  if (!token) throw new Error(`TokenRequest for ServiceAccount ${namespace}/${serviceAccount} returned no token`);
  return token;
}

/**
 * Writes a kubeconfig that authenticates with `token` to the admin kubeconfig's server, trusting
 * the same CA; returns its path.
 */
export async function writeTokenKubeConfig(admin: KubeConfig, token: string): Promise<string> {
  const cluster = admin.getCurrentCluster();
  if (!cluster) throw new Error('the admin kubeconfig has no current cluster');
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [
      {
        name: 'bed',
        server: cluster.server,
        ...(cluster.caFile ? { caFile: cluster.caFile } : {}),
        ...(cluster.caData ? { caData: cluster.caData } : {}),
      },
    ],
    users: [{ name: 'sa', token }],
    contexts: [{ name: 'sa', cluster: 'bed', user: 'sa' }],
    currentContext: 'sa',
  });
  const file = join(await mkdtemp(join(tmpdir(), 'kr-token-')), 'kubeconfig');
  await writeFile(file, kc.exportConfig(), { mode: 0o600 });
  return file;
}

/** A KubeConfig from a file. */
export function kubeConfigFrom(file: string): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromFile(file);
  return kc;
}

/**
 * Every permission the apiserver grants the caller of `kc` in `namespace` (cluster-wide grants
 * included), as the apiserver itself evaluates RBAC: a SelfSubjectRulesReview.
 */
export async function grantedPermissions(kc: KubeConfig, namespace: string): Promise<Permission[]> {
  const review = await kc.makeApiClient(AuthorizationV1Api).createSelfSubjectRulesReview({ body: { spec: { namespace } } });
  if (review.status?.incomplete) throw new Error(`the rules review in ${namespace} is incomplete: ${review.status.evaluationError ?? ''}`);
  return permissions(review.status?.resourceRules ?? []);
}
