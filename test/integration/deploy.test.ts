/**
 * The Helm chart and the plain manifests on the real bed: helm lints the chart, the apiserver
 * accepts everything they render (server-side dry run, with admission and the CRDs' schemas), and
 * the chart's RBAC is least privilege — the apiserver grants the chart's ServiceAccount exactly
 * the permissions the operator needs, the operator runs a full lifecycle with nothing else (its
 * token, the chart's args), and taking one permission away shows up, named, in its log or status.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { after, before, describe, test } from 'node:test';
import {
  CoordinationV1Api,
  CoreV1Api,
  CustomObjectsApi,
  PatchStrategy,
  setHeaderOptions,
  type KubeConfig,
  type V1PodSpec,
  type V1PolicyRule,
} from '@kubernetes/client-node';
import { Etcd3 } from 'etcd3';
import { CHART_DIR, MANIFESTS_DIR, MANIFESTS_RELEASE, type HelmTool } from '../../scripts/render-manifests.ts';
import { adminKubeConfig, bedEnv, uniqueSuffix } from '../support/env.ts';
import {
  createNamespace,
  createServiceInstance,
  deleteServiceInstance,
  eventsFor,
  eventually,
  getServiceInstance,
  installCrds,
} from '../support/kube.ts';
import { startOperator, type OperatorProcess } from '../support/operator.ts';
import {
  grantedPermissions,
  kubeConfigFrom,
  kubectlApply,
  mintToken,
  ofKind,
  OPERATOR_PERMISSIONS,
  parseManifests,
  RBAC_KINDS,
  renderChart,
  renderChartText,
  run,
  writeTokenKubeConfig,
  type Manifest,
  type Permission,
  type Release,
} from '../support/rbac.ts';

const sfx = uniqueSuffix();
const LEASE_ID = 'kube-registrar-leader';

let admin: KubeConfig;
let tool: HelmTool;
let etcd: Etcd3;
const operators: OperatorProcess[] = [];
/** Cluster-scoped objects to remove after the tests (namespaced ones stay in their throwaway namespaces). */
const clusterScoped: Manifest[] = [];

/** Flags the test harness sets itself (ports, log level), taken out of the chart's args. */
const HARNESS_FLAGS = /^--(metrics-address|health-address|log-level)=/;

function containerArgs(manifests: readonly Manifest[]): string[] {
  const [d] = ofKind(manifests, 'Deployment') as unknown as { spec: { template: { spec: { containers: { args: string[] }[] } } } }[];
  return d?.spec.template.spec.containers[0]?.args ?? [];
}

function serviceAccountOf(manifests: readonly Manifest[]): Manifest {
  const [sa] = ofKind(manifests, 'ServiceAccount');
  assert.ok(sa, 'the chart renders a ServiceAccount');
  return sa;
}

/** Applies the chart's RBAC objects (and Registries) of a release, mints a token for its ServiceAccount and writes a kubeconfig with it. */
async function installIdentity(manifests: readonly Manifest[]): Promise<{ kubeconfig: string; kc: KubeConfig }> {
  await kubectlApply(bedEnv('KUBECTL'), bedEnv('KUBECONFIG'), ofKind(manifests, ...RBAC_KINDS));
  const registries = ofKind(manifests, 'Registry');
  if (registries.length > 0) await kubectlApply(bedEnv('KUBECTL'), bedEnv('KUBECONFIG'), registries);
  clusterScoped.push(...registries, ...ofKind(manifests, 'ClusterRole', 'ClusterRoleBinding'));
  const sa = serviceAccountOf(manifests);
  const token = await mintToken(admin, sa.metadata.namespace ?? '', sa.metadata.name);
  const kubeconfig = await writeTokenKubeConfig(admin, token);
  return { kubeconfig, kc: kubeConfigFrom(kubeconfig) };
}

/** Runs the operator with the chart's own args, authenticated only by the chart's ServiceAccount token. */
async function startChartOperator(manifests: readonly Manifest[], kubeconfig: string): Promise<OperatorProcess> {
  // startOperator passes the admin kubeconfig first; a later --kubeconfig wins in util.parseArgs.
  const op = await startOperator([...containerArgs(manifests).filter((a) => !HARNESS_FLAGS.test(a)), `--kubeconfig=${kubeconfig}`]);
  operators.push(op);
  return op;
}

function etcdRegistry(
  name: string,
  namespaceLabel: string,
  prefix: string,
  secret: { name: string; namespace: string },
): { name: string; spec: Record<string, unknown> } {
  return {
    name,
    spec: {
      type: 'etcd',
      namespaceSelector: { matchLabels: { 'deploy-test': namespaceLabel } },
      namespace: '{namespace}',
      leaseTTLSeconds: 5,
      etcd: { endpoints: [bedEnv('ETCD_ENDPOINTS')], prefix, credentialsSecretRef: secret },
    },
  };
}

/** A Secret the bed's etcd does not need (it has no auth), so only the right to read it matters. */
async function createCredentialsSecret(namespace: string, name: string): Promise<void> {
  await admin
    .makeApiClient(CoreV1Api)
    .createNamespacedSecret({ namespace, body: { metadata: { name }, stringData: { note: 'the test bed etcd needs no credentials' } } });
}

async function etcdKeys(prefix: string): Promise<string[]> {
  return Object.keys(await etcd.getAll().prefix(prefix).strings()).sort();
}

async function operatorLog(op: OperatorProcess): Promise<string> {
  return readFile(op.process.logFile, 'utf8');
}

function expectedIn(parts: { cluster?: boolean; workloads?: boolean; leases?: boolean; secrets?: boolean }): Permission[] {
  return [
    ...(parts.cluster ? OPERATOR_PERMISSIONS.cluster : []),
    ...(parts.workloads ? OPERATOR_PERMISSIONS.workloads : []),
    ...(parts.leases ? OPERATOR_PERMISSIONS.leaderElection(LEASE_ID) : []),
    ...(parts.secrets ? OPERATOR_PERMISSIONS.credentials : []),
  ].sort();
}

/** What the apiserver grants `kc` in `namespace` beyond what every authenticated user has. */
async function grantedBeyondBaseline(kc: KubeConfig, baseline: KubeConfig, namespace: string): Promise<Permission[]> {
  const everyone = new Set(await grantedPermissions(baseline, namespace));
  return (await grantedPermissions(kc, namespace)).filter((p) => !everyone.has(p));
}

async function removeFinalizersAndDelete(namespace: string, name: string): Promise<void> {
  const custom = admin.makeApiClient(CustomObjectsApi);
  const g = { group: 'registrar.dev', version: 'v1alpha1', plural: 'serviceinstances', namespace, name };
  try {
    await custom.patchNamespacedCustomObject(
      { ...g, body: { metadata: { finalizers: null } } },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
    await custom.deleteNamespacedCustomObject(g);
  } catch (err: unknown) {
    if ((err as { code?: number }).code !== 404) throw err;
  }
}

describe('deploying with the Helm chart and the plain manifests', () => {
  before(async () => {
    admin = adminKubeConfig();
    tool = { helm: bedEnv('HELM'), kubeVersion: bedEnv('TESTBED_KUBERNETES_VERSION') };
    etcd = new Etcd3({ hosts: bedEnv('ETCD_ENDPOINTS').split(',') });
    await installCrds(admin);
  });

  after(async () => {
    for (const op of operators) await op.process.stop();
    if (clusterScoped.length > 0)
      await run(
        bedEnv('KUBECTL'),
        ['--kubeconfig', bedEnv('KUBECONFIG'), 'delete', '--ignore-not-found', '--wait=false', '-f', '-'],
        clusterScoped.map((m) => JSON.stringify(m)).join('\n---\n'),
      );
    etcd.close();
  });

  test('helm lint passes, with the default values and with every option set', async () => {
    await run(tool.helm, ['lint', '--strict', CHART_DIR, '--kube-version', tool.kubeVersion]);
    const values = [
      '--set',
      'serviceMonitor.enabled=true',
      '--set',
      'operator.watchNamespaces={prod,dev}',
      '--set',
      'operator.clusterId=eu-1',
      '--set',
      'credentials.namespaces={vault}',
      '--set',
      'credentials.secretNames={etcd}',
    ];
    await run(tool.helm, ['lint', '--strict', CHART_DIR, '--kube-version', tool.kubeVersion, ...values]);
  });

  test('the apiserver accepts everything the chart renders (server-side dry run), Registries included, and its pod passes the restricted Pod Security Standard', async () => {
    const ns = `kr-dry-${sfx}`;
    await createNamespace(admin, ns, { 'pod-security.kubernetes.io/enforce': 'restricted' });
    const rendered = await renderChartText(tool, {
      name: `kr-dry-${sfx}`,
      namespace: ns,
      values: { registries: [etcdRegistry(`dry-${sfx}`, 'none', '/dry', { name: 'etcd', namespace: ns })] },
    });
    assert.equal(parseManifests(rendered).filter((m) => m.kind === 'Registry').length, 1);
    const out = await run(
      bedEnv('KUBECTL'),
      ['--kubeconfig', bedEnv('KUBECONFIG'), 'apply', '--server-side', '--dry-run=server', '-f', '-'],
      rendered,
    );
    assert.match(out, /deployment\.apps\/kr-dry-\S+ serverside-applied \(server dry run\)/);
    assert.match(out, /registry\.registrar\.dev\/dry-\S+ serverside-applied \(server dry run\)/);
    // PodSecurity admission checks pods, not Deployments: dry-run the Deployment's pod in a
    // namespace that enforces the restricted standard.
    const [deployment] = ofKind(parseManifests(rendered), 'Deployment') as unknown as {
      spec: { template: { metadata: Record<string, unknown>; spec: V1PodSpec } };
    }[];
    assert.ok(deployment);
    await admin.makeApiClient(CoreV1Api).createNamespacedPod({
      namespace: ns,
      dryRun: 'All',
      body: { metadata: { ...deployment.spec.template.metadata, name: 'operator' }, spec: deployment.spec.template.spec },
    });
  });

  test('the plain manifests build with kustomize and the apiserver accepts them (server-side dry run)', async () => {
    const built = await run(bedEnv('KUBECTL'), ['kustomize', MANIFESTS_DIR]);
    const kinds = parseManifests(built).map((m) => m.kind);
    for (const k of ['Namespace', 'CustomResourceDefinition', 'Deployment', 'ClusterRole', 'Role', 'ServiceAccount'])
      assert.ok(kinds.includes(k), `kustomize output has a ${k}`);
    // A dry run persists nothing, so the namespace the manifests install into must already exist.
    await createNamespace(admin, MANIFESTS_RELEASE.namespace).catch((err: unknown) => {
      if ((err as { code?: number }).code !== 409) throw err;
    });
    const out = await run(bedEnv('KUBECTL'), [
      '--kubeconfig',
      bedEnv('KUBECONFIG'),
      'apply',
      '--server-side',
      '--dry-run=server',
      '-k',
      MANIFESTS_DIR,
    ]);
    assert.match(out, /deployment\.apps\/kube-registrar serverside-applied \(server dry run\)/);
  });

  test("with default values the apiserver grants the chart's ServiceAccount exactly the operator's permissions, cluster-wide and in the release namespace", async () => {
    const ns = `kr-def-${sfx}`;
    const other = `kr-def-other-${sfx}`;
    await createNamespace(admin, ns);
    await createNamespace(admin, other);
    const manifests = await renderChart(tool, { name: `kr-def-${sfx}`, namespace: ns });
    const { kc } = await installIdentity(manifests);
    const baseline = await unboundIdentity(ns);
    assert.deepEqual(
      await grantedBeyondBaseline(kc, baseline, ns),
      expectedIn({ cluster: true, workloads: true, leases: true, secrets: true }),
    );
    assert.deepEqual(
      await grantedBeyondBaseline(kc, baseline, other),
      expectedIn({ cluster: true, workloads: true }),
      'no Secret and no Lease outside the release namespace',
    );
  });

  describe('the operator under the chart’s RBAC only', () => {
    const ns = `kr-rbac-${sfx}`;
    const app = `kr-app-${sfx}`;
    const unwatched = `kr-unwatched-${sfx}`;
    const prefix = `/deploy-${sfx}`;
    let manifests: Manifest[];
    let kc: KubeConfig;
    let op: OperatorProcess;

    before(async () => {
      await createNamespace(admin, ns);
      await createNamespace(admin, app, { 'deploy-test': app });
      await createNamespace(admin, unwatched);
      await createCredentialsSecret(ns, 'etcd');
      // A Secret outside the credentials namespaces: the operator must not be able to read it.
      await createCredentialsSecret(app, 'etcd');
      const release: Release = {
        name: `kr-rbac-${sfx}`,
        namespace: ns,
        values: {
          operator: { watchNamespaces: [app] },
          registries: [
            etcdRegistry(`rbac-${sfx}`, app, prefix, { name: 'etcd', namespace: ns }),
            etcdRegistry(`rbac-locked-${sfx}`, app, `${prefix}-locked`, { name: 'etcd', namespace: app }),
          ],
        },
      };
      manifests = await renderChart(tool, release);
      const identity = await installIdentity(manifests);
      kc = identity.kc;
      op = await startChartOperator(manifests, identity.kubeconfig);
    });

    after(async () => {
      await op.process.stop();
      await removeFinalizersAndDelete(app, 'locked');
    });

    test('the apiserver grants exactly the operator’s permissions: Secrets and the Lease in the release namespace only, pods and ServiceInstances in the watched namespace only', async () => {
      const baseline = await unboundIdentity(ns);
      assert.deepEqual(await grantedBeyondBaseline(kc, baseline, ns), expectedIn({ cluster: true, leases: true, secrets: true }));
      assert.deepEqual(await grantedBeyondBaseline(kc, baseline, app), expectedIn({ cluster: true, workloads: true }));
      assert.deepEqual(await grantedBeyondBaseline(kc, baseline, unwatched), expectedIn({ cluster: true }));
    });

    test('the operator holds the leader-election Lease in the release namespace', async () => {
      const lease = await eventually('the Lease', async () => {
        const l = await admin.makeApiClient(CoordinationV1Api).readNamespacedLease({ namespace: ns, name: LEASE_ID });
        return l.spec?.holderIdentity ? l : undefined;
      });
      assert.ok(lease.spec?.holderIdentity);
    });

    test('the operator writes Registry status: Connected where it may read the credentials, the 403 where it may not', async () => {
      const readyOf = async (name: string): Promise<{ status: string; reason: string; message: string } | undefined> => {
        const reg = (await admin
          .makeApiClient(CustomObjectsApi)
          .getClusterCustomObject({ group: 'registrar.dev', version: 'v1alpha1', plural: 'registries', name })) as {
          status?: { conditions?: { type: string; status: string; reason: string; message: string }[] };
        };
        return reg.status?.conditions?.find((c) => c.type === 'Ready');
      };
      const allowed = await eventually('the Ready condition of the Registry', () => readyOf(`rbac-${sfx}`));
      assert.equal(allowed.status, 'True', allowed.message);
      const locked = await eventually('the Ready condition of the locked Registry', () => readyOf(`rbac-locked-${sfx}`));
      assert.equal(locked.status, 'False');
      assert.match(locked.message, /cannot get resource\W+secrets\W/);
    });

    test('a static ServiceInstance is registered in etcd with status and events, and deleting it removes the entry and the object', async () => {
      await createServiceInstance(admin, app, 'web', {
        service: 'web',
        registries: [`rbac-${sfx}`],
        endpoints: [{ address: '192.0.2.70', port: 80 }],
      });
      const dir = `${prefix}/${app}/web/`;
      await eventually('the entry in etcd', async () => ((await etcdKeys(dir)).includes(`${dir}192.0.2.70:80`) ? true : undefined));
      const si = await eventually('status written by the operator', async () => {
        const s = await getServiceInstance(admin, app, 'web');
        return s?.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ? s : undefined;
      });
      assert.deepEqual(si.status?.endpoints, { total: 1, ready: 1, registered: 1 });
      assert.equal(si.status?.registrations?.[0]?.entries, 1);
      assert.ok(si.metadata.finalizers?.includes('registrar.dev/finalizer'), 'the finalizer was added');
      await eventually('a Registered event', async () =>
        (await eventsFor(admin, app, 'web')).some((e) => e.reason === 'Registered') ? true : undefined,
      );

      await deleteServiceInstance(admin, app, 'web');
      await eventually('the object to be gone', async () =>
        (await getServiceInstance(admin, app, 'web')) === undefined ? true : undefined,
      );
      assert.deepEqual(await etcdKeys(dir), [], 'no entry outlives its ServiceInstance');
      assert.doesNotMatch(await operatorLog(op), /forbidden/i, 'nothing the operator did was forbidden');
    });

    test('a Registry whose credentials live outside the credentials namespaces is refused by the apiserver, and status says so', async () => {
      await createServiceInstance(admin, app, 'locked', {
        service: 'locked',
        registries: [`rbac-locked-${sfx}`],
        endpoints: [{ address: '192.0.2.71', port: 80 }],
      });
      const cond = await eventually('the failure in status', async () => {
        const s = await getServiceInstance(admin, app, 'locked');
        return s?.status?.conditions?.find((c) => c.type === 'Registered' && c.status === 'False' && c.reason === 'RegistrationFailed');
      });
      assert.match(cond.message, /cannot get resource\W+secrets\W+in API group\W+in the namespace\W+kr-app-/);
      assert.deepEqual(await etcdKeys(`${prefix}-locked/`), [], 'nothing written');
    });
  });

  /**
   * Installs the chart's RBAC without one permission, runs the operator on it, lets it register a
   * static ServiceInstance, and expects `surfaced` (the apiserver's 403 names verb and resource)
   * in the operator's log.
   */
  async function runWithout(label: string, resource: string, verb: string, surfaced: RegExp): Promise<void> {
    const ns = `kr-${label}-${sfx}`;
    const app = `kr-${label}-app-${sfx}`;
    const prefix = `/deploy-${label}-${sfx}`;
    await createNamespace(admin, ns);
    await createNamespace(admin, app, { 'deploy-test': app });
    await createCredentialsSecret(ns, 'etcd');
    const rendered = await renderChart(tool, {
      name: `kr-${label}-${sfx}`,
      namespace: ns,
      values: {
        operator: { watchNamespaces: [app] },
        registries: [etcdRegistry(`${label}-${sfx}`, app, prefix, { name: 'etcd', namespace: ns })],
      },
    });
    const manifests = rendered.map((m) =>
      m.kind === 'ClusterRole' ? { ...m, rules: withoutVerb((m as unknown as { rules: V1PolicyRule[] }).rules, resource, verb) } : m,
    );
    const { kubeconfig, kc } = await installIdentity(manifests);
    const granted = await grantedPermissions(kc, app);
    assert.ok(!granted.some((p) => p.endsWith(`/${resource}:${verb}`)), `${verb} on ${resource} is gone`);
    const op = await startChartOperator(manifests, kubeconfig);
    try {
      // The Registry that does not exist makes every reconcile record a Warning event and write
      // status, whatever the registry already holds.
      await createServiceInstance(admin, app, 'web', {
        service: 'web',
        registries: [`${label}-${sfx}`, `missing-${sfx}`],
        endpoints: [{ address: '192.0.2.80', port: 80 }],
      });
      // Everything else still works: the entry is written.
      const dir = `${prefix}/${app}/web/`;
      await eventually('the entry in etcd', async () => ((await etcdKeys(dir)).includes(`${dir}192.0.2.80:80`) ? true : undefined));
      await eventually(
        'the operator to log the 403 naming the verb and the resource',
        async () => (surfaced.test(await operatorLog(op)) ? true : undefined),
        30_000,
      ).catch(async (err: unknown) => {
        throw new Error(`the operator did not surface the missing ${verb} on ${resource}; its log:\n${await op.process.logTail(40)}`, {
          cause: err,
        });
      });
    } finally {
      await op.process.stop();
      await removeFinalizersAndDelete(app, 'web');
    }
  }

  test('without create on events the operator names the missing permission in its log', async () => {
    await runWithout('noevents', 'events', 'create', /cannot create resource\W+events\W/);
  });

  test('without patch on serviceinstances/status the operator names the missing permission in its log', async () => {
    await runWithout('nostatus', 'serviceinstances/status', 'patch', /cannot patch resource\W+serviceinstances\/status\W/);
  });
});

/** `rules` without `verb` on `resource`; a rule left with no verb is dropped. */
function withoutVerb(rules: readonly V1PolicyRule[], resource: string, verb: string): V1PolicyRule[] {
  return rules
    .map((r) => (r.resources?.includes(resource) ? { ...r, verbs: r.verbs.filter((v) => v !== verb) } : r))
    .filter((r) => r.verbs.length > 0);
}

/** A ServiceAccount with no bindings: what every authenticated caller is granted. */
async function unboundIdentity(namespace: string): Promise<KubeConfig> {
  const name = `unbound-${uniqueSuffix()}`;
  await admin.makeApiClient(CoreV1Api).createNamespacedServiceAccount({ namespace, body: { metadata: { name } } });
  return kubeConfigFrom(await writeTokenKubeConfig(admin, await mintToken(admin, namespace, name)));
}
