/**
 * The Helm chart without a cluster: its CRDs are the repository's, deploy/manifests is what the
 * chart renders, the operator's own flag parser accepts the Deployment's args, and the RBAC rules
 * are exactly the permissions the operator's API calls need. Renders with the bed's helm
 * (HELM from the global setup, else the provisioned binary).
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { before, describe, test } from 'node:test';
import { load } from 'js-yaml';
import { loadConfig } from '../../src/config.ts';
import { bedHelm, CHART_DIR, CRDS_DIR, listYaml, MANIFESTS_DIR, renderManifests, type HelmTool } from '../../scripts/render-manifests.ts';
import { REPO_ROOT } from '../../testbed/provision.ts';
import { ofKind, OPERATOR_PERMISSIONS, permissions, renderChart, renderChartText, type Manifest, type Release } from '../support/rbac.ts';

interface Container {
  name: string;
  args: string[];
  ports: { name: string; containerPort: number }[];
  livenessProbe: { httpGet: { path: string; port: string } };
  readinessProbe: { httpGet: { path: string; port: string } };
  securityContext: Record<string, unknown>;
  resources: { requests?: Record<string, string>; limits?: Record<string, string> };
}

interface PodSpec {
  serviceAccountName: string;
  securityContext: Record<string, unknown>;
  containers: Container[];
}

const RELEASE: Release = { name: 'kube-registrar', namespace: 'registrar-system' };

let tool: HelmTool;

function only(manifests: readonly Manifest[], kind: string, name?: string): Manifest {
  const found = manifests.filter((m) => m.kind === kind && (name === undefined || m.metadata.name === name));
  assert.equal(
    found.length,
    1,
    `exactly one ${kind}${name ? ` ${name}` : ''} in ${JSON.stringify(manifests.map((m) => `${m.kind}/${m.metadata.name}`))}`,
  );
  return found[0] as Manifest;
}

function podSpec(manifests: readonly Manifest[]): PodSpec {
  return (only(manifests, 'Deployment') as unknown as { spec: { template: { spec: PodSpec } } }).spec.template.spec;
}

function operatorContainer(manifests: readonly Manifest[]): Container {
  const c = podSpec(manifests).containers;
  assert.equal(c.length, 1);
  return c[0] as Container;
}

function rulesOf(m: Manifest): Parameters<typeof permissions>[0] {
  return (m as unknown as { rules: Parameters<typeof permissions>[0] }).rules;
}

function roleRefAndSubjects(m: Manifest): {
  roleRef: { kind: string; name: string };
  subjects: { kind: string; name: string; namespace: string }[];
} {
  return m as unknown as { roleRef: { kind: string; name: string }; subjects: { kind: string; name: string; namespace: string }[] };
}

describe('helm chart', () => {
  before(async () => {
    tool = await bedHelm();
  });

  test("the chart's crds/ are byte-for-byte copies of the repository's crds/", async () => {
    const repo = await listYaml(CRDS_DIR);
    const chart = await listYaml(join(CHART_DIR, 'crds'));
    assert.deepEqual(chart, repo, 'same files; run `npm run manifests` after changing crds/');
    for (const f of repo)
      assert.equal(
        await readFile(join(CHART_DIR, 'crds', f), 'utf8'),
        await readFile(join(CRDS_DIR, f), 'utf8'),
        `${f} differs; run \`npm run manifests\``,
      );
  });

  test('deploy/manifests is exactly what the chart renders (run `npm run manifests` after changing the chart)', async () => {
    const expected = await renderManifests(tool);
    assert.deepEqual(await listYaml(MANIFESTS_DIR), expected.map((f) => f.path).sort(), 'same files');
    for (const f of expected)
      assert.equal(await readFile(join(MANIFESTS_DIR, f.path), 'utf8'), f.content, `deploy/manifests/${f.path} is stale`);
  });

  test("the chart's appVersion is the operator's package version", async () => {
    const chart = load(await readFile(join(CHART_DIR, 'Chart.yaml'), 'utf8')) as { appVersion: string };
    const pkg = JSON.parse(await readFile(join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string };
    assert.equal(chart.appVersion, pkg.version);
  });

  test('default values render the operator, its identity and permissions, a metrics Service and a PodDisruptionBudget, and nothing else', async () => {
    const m = await renderChart(tool, RELEASE);
    assert.deepEqual(m.map((x) => `${x.kind}/${x.metadata.name}`).sort(), [
      'ClusterRole/kube-registrar',
      'ClusterRole/kube-registrar-workloads',
      'ClusterRoleBinding/kube-registrar',
      'ClusterRoleBinding/kube-registrar-workloads',
      'Deployment/kube-registrar',
      'PodDisruptionBudget/kube-registrar',
      'Role/kube-registrar-credentials',
      'Role/kube-registrar-leader-election',
      'RoleBinding/kube-registrar-credentials',
      'RoleBinding/kube-registrar-leader-election',
      'Service/kube-registrar-metrics',
      'ServiceAccount/kube-registrar',
    ]);
    for (const x of m)
      if (!['ClusterRole', 'ClusterRoleBinding'].includes(x.kind))
        assert.equal(x.metadata.namespace, RELEASE.namespace, `${x.kind} in the release namespace`);
  });

  test('the Deployment runs two replicas with leader election in the release namespace, and the operator accepts its args', async () => {
    const m = await renderChart(tool, RELEASE);
    assert.equal((only(m, 'Deployment') as unknown as { spec: { replicas: number } }).spec.replicas, 2);
    const c = operatorContainer(m);
    // The operator's own parser: a flag it would refuse crashes the pod, so refuse it here.
    const cfg = loadConfig(c.args, {});
    assert.ok(cfg);
    assert.equal(cfg.leaderElection, true);
    assert.equal(cfg.leaderElectionNamespace, RELEASE.namespace);
    assert.equal(cfg.leaderElectionId, 'kube-registrar-leader');
    assert.equal(cfg.metricsAddress, ':8080');
    assert.equal(cfg.healthAddress, ':8081');
    assert.equal(cfg.kubeconfig, undefined, 'in-cluster config');
    assert.deepEqual(cfg.watchNamespaces, []);
    assert.equal(cfg.clusterId, undefined);
    assert.deepEqual(
      c.ports.map((p) => [p.name, p.containerPort]),
      [
        ['metrics', 8080],
        ['health', 8081],
      ],
    );
    assert.deepEqual(c.livenessProbe.httpGet, { path: '/healthz', port: 'health' });
    assert.deepEqual(c.readinessProbe.httpGet, { path: '/readyz', port: 'health' });
    assert.ok(
      c.resources.requests?.['cpu'] && c.resources.requests['memory'] && c.resources.limits?.['memory'],
      'requests and a memory limit',
    );
    assert.equal(podSpec(m).serviceAccountName, only(m, 'ServiceAccount').metadata.name);
  });

  test('every value of the operator section becomes the flag the operator reads', async () => {
    const m = await renderChart(tool, {
      ...RELEASE,
      values: {
        operator: {
          clusterId: 'eu-1',
          watchNamespaces: ['prod', 'dev'],
          concurrency: 3,
          healthCheckConcurrency: 40,
          resyncPeriodSeconds: 60,
          logLevel: 'debug',
          dryRun: true,
          registryTimeoutSeconds: 4,
          extraArgs: ['--concurrency=5'],
        },
        leaderElection: { id: 'my-lease', leaseDurationSeconds: 20, renewDeadlineSeconds: 12, retryPeriodSeconds: 3 },
        metrics: { port: 9090 },
        health: { port: 9091 },
      },
    });
    const cfg = loadConfig(operatorContainer(m).args, {});
    assert.ok(cfg);
    assert.equal(cfg.clusterId, 'eu-1');
    assert.deepEqual(cfg.watchNamespaces, ['prod', 'dev']);
    assert.equal(cfg.concurrency, 5, 'extraArgs come last and win');
    assert.equal(cfg.healthCheckConcurrency, 40);
    assert.equal(cfg.resyncSeconds, 60);
    assert.equal(cfg.logLevel, 'debug');
    assert.equal(cfg.dryRun, true);
    assert.equal(cfg.registryTimeoutSeconds, 4);
    assert.equal(cfg.leaderElectionId, 'my-lease');
    assert.equal(cfg.leaseDurationSeconds, 20);
    assert.equal(cfg.renewDeadlineSeconds, 12);
    assert.equal(cfg.retryPeriodSeconds, 3);
    assert.equal(cfg.metricsAddress, ':9090');
    assert.equal(cfg.healthAddress, ':9091');
    const svc = only(m, 'Service') as unknown as { spec: { ports: { name: string; targetPort: string }[] } };
    assert.deepEqual(
      svc.spec.ports.map((p) => [p.name, p.targetPort]),
      [['metrics', 'metrics']],
    );
  });

  test('the pod runs as a non-root user with no privileges, no capabilities, a read-only root filesystem and the default seccomp profile', async () => {
    const m = await renderChart(tool, RELEASE);
    const pod = podSpec(m);
    assert.equal(pod.securityContext['runAsNonRoot'], true);
    assert.equal(pod.securityContext['runAsUser'], 65532);
    assert.deepEqual(pod.securityContext['seccompProfile'], { type: 'RuntimeDefault' });
    const sc = operatorContainer(m).securityContext;
    assert.equal(sc['runAsNonRoot'], true);
    assert.equal(sc['runAsUser'], 65532);
    assert.equal(sc['readOnlyRootFilesystem'], true);
    assert.equal(sc['allowPrivilegeEscalation'], false);
    assert.deepEqual(sc['capabilities'], { drop: ['ALL'] });
    assert.deepEqual(sc['seccompProfile'], { type: 'RuntimeDefault' });
  });

  test('the RBAC rules grant exactly the permissions the operator uses: no wildcard, and Secrets only through Roles', async () => {
    const m = await renderChart(tool, RELEASE);
    for (const r of ofKind(m, 'ClusterRole', 'Role')) {
      for (const rule of rulesOf(r)) {
        for (const list of [rule.verbs, rule.resources ?? [], rule.apiGroups ?? []])
          assert.ok(!list.includes('*'), `${r.kind} ${r.metadata.name} has no wildcard`);
      }
    }
    assert.deepEqual(permissions(rulesOf(only(m, 'ClusterRole', 'kube-registrar'))), [...OPERATOR_PERMISSIONS.cluster].sort());
    assert.deepEqual(permissions(rulesOf(only(m, 'ClusterRole', 'kube-registrar-workloads'))), [...OPERATOR_PERMISSIONS.workloads].sort());
    assert.deepEqual(
      permissions(rulesOf(only(m, 'Role', 'kube-registrar-leader-election'))),
      OPERATOR_PERMISSIONS.leaderElection('kube-registrar-leader').sort(),
    );
    assert.deepEqual(permissions(rulesOf(only(m, 'Role', 'kube-registrar-credentials'))), [...OPERATOR_PERMISSIONS.credentials]);
    for (const r of ofKind(m, 'ClusterRole'))
      assert.ok(!permissions(rulesOf(r)).some((p) => p.startsWith('core/secrets')), `${r.metadata.name} grants nothing on Secrets`);
    // Every binding names the chart's ServiceAccount and one of the chart's roles.
    const roles = new Set(ofKind(m, 'ClusterRole', 'Role').map((r) => `${r.kind}/${r.metadata.name}`));
    for (const b of ofKind(m, 'ClusterRoleBinding', 'RoleBinding')) {
      const { roleRef, subjects } = roleRefAndSubjects(b);
      assert.ok(roles.has(`${roleRef.kind}/${roleRef.name}`), `${b.metadata.name} binds a role of the chart`);
      assert.deepEqual(subjects, [{ kind: 'ServiceAccount', name: 'kube-registrar', namespace: RELEASE.namespace }]);
    }
  });

  test('with a cluster id the operator may not read any namespace by name', async () => {
    const m = await renderChart(tool, { ...RELEASE, values: { operator: { clusterId: 'eu-1' } } });
    assert.deepEqual(
      permissions(rulesOf(only(m, 'ClusterRole', 'kube-registrar'))),
      OPERATOR_PERMISSIONS.cluster.filter((p) => p !== 'core/namespaces[kube-system]:get').sort(),
    );
  });

  test('watched namespaces get one RoleBinding each for pods and ServiceInstances, instead of a cluster-wide binding', async () => {
    const m = await renderChart(tool, { ...RELEASE, values: { operator: { watchNamespaces: ['prod', 'dev'] } } });
    assert.deepEqual(
      ofKind(m, 'ClusterRoleBinding').map((b) => b.metadata.name),
      ['kube-registrar'],
    );
    const workloads = ofKind(m, 'RoleBinding').filter((b) => roleRefAndSubjects(b).roleRef.name === 'kube-registrar-workloads');
    assert.deepEqual(workloads.map((b) => b.metadata.namespace).sort(), ['dev', 'prod']);
    for (const b of workloads) assert.equal(roleRefAndSubjects(b).roleRef.kind, 'ClusterRole');
  });

  test('credentials namespaces get one Role and RoleBinding each, limited to the named Secrets when given', async () => {
    const m = await renderChart(tool, {
      ...RELEASE,
      values: { credentials: { namespaces: ['vault-a', 'vault-b'], secretNames: ['etcd-prod'] } },
    });
    const roles = ofKind(m, 'Role').filter((r) => r.metadata.name === 'kube-registrar-credentials');
    assert.deepEqual(roles.map((r) => r.metadata.namespace).sort(), ['vault-a', 'vault-b']);
    for (const r of roles) assert.deepEqual(permissions(rulesOf(r)), ['core/secrets[etcd-prod]:get']);
    const bindings = ofKind(m, 'RoleBinding').filter((r) => r.metadata.name === 'kube-registrar-credentials');
    assert.deepEqual(bindings.map((r) => r.metadata.namespace).sort(), ['vault-a', 'vault-b']);
  });

  test('a ServiceMonitor scrapes the metrics Service only when enabled', async () => {
    assert.equal(ofKind(await renderChart(tool, RELEASE), 'ServiceMonitor').length, 0);
    const m = await renderChart(tool, { ...RELEASE, values: { serviceMonitor: { enabled: true, labels: { release: 'prom' } } } });
    const sm = only(m, 'ServiceMonitor') as unknown as {
      metadata: { labels: Record<string, string> };
      spec: { selector: { matchLabels: Record<string, string> }; endpoints: { port: string; path: string }[] };
    };
    assert.equal(sm.metadata.labels['release'], 'prom');
    const svc = only(m, 'Service');
    for (const [k, v] of Object.entries(sm.spec.selector.matchLabels))
      assert.equal(svc.metadata.labels?.[k], v, `the Service carries ${k}=${v}`);
    assert.deepEqual(
      sm.spec.endpoints.map((e) => [e.port, e.path]),
      [['metrics', '/metrics']],
    );
  });

  test('Registries listed in values are created with their spec as given', async () => {
    const spec = {
      type: 'etcd',
      default: true,
      namespaceSelector: { matchLabels: { env: 'prod' } },
      etcd: { endpoints: ['https://etcd:2379'], credentialsSecretRef: { name: 'etcd-prod', namespace: 'registrar-system' } },
    };
    const m = await renderChart(tool, { ...RELEASE, values: { registries: [{ name: 'main', spec }] } });
    const reg = only(m, 'Registry') as unknown as { apiVersion: string; metadata: { name: string; namespace?: string }; spec: unknown };
    assert.equal(reg.apiVersion, 'registrar.dev/v1alpha1');
    assert.equal(reg.metadata.name, 'main');
    assert.equal(reg.metadata.namespace, undefined, 'Registries are cluster-scoped');
    assert.deepEqual(reg.spec, spec);
  });

  test('a PodDisruptionBudget keeps one pod available, and is left out for a single replica, which it would make undrainable', async () => {
    const pdb = only(await renderChart(tool, RELEASE), 'PodDisruptionBudget') as unknown as {
      spec: { minAvailable: number; selector: { matchLabels: Record<string, string> } };
    };
    assert.equal(pdb.spec.minAvailable, 1);
    assert.equal(pdb.spec.selector.matchLabels['app.kubernetes.io/instance'], RELEASE.name);
    assert.equal(ofKind(await renderChart(tool, { ...RELEASE, values: { replicaCount: 1 } }), 'PodDisruptionBudget').length, 0);
  });

  test('values the operator would refuse fail at render time with a message naming them', async () => {
    for (const [values, message] of [
      [{ operator: { logLevel: 'loud' } }, /logLevel/],
      [{ operator: { concurrency: 0 } }, /concurrency/],
      [{ operator: { healthCheckConcurrency: 0 } }, /healthCheckConcurrency/],
      [{ operator: { clusterId: 'has space' } }, /clusterId/],
      [{ leaderElection: { leaseDurationSeconds: 10, renewDeadlineSeconds: 10 } }, /renewDeadlineSeconds must be shorter/],
      [{ registries: [{ name: 'no-spec' }] }, /spec/],
      [{ operator: { watchNamespaes: ['typo'] } }, /watchNamespaes/],
    ] as const) {
      await assert.rejects(renderChartText(tool, { ...RELEASE, values }), message, JSON.stringify(values));
    }
  });
});
