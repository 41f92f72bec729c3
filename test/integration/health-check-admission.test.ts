/**
 * spec.healthCheck at admission, on the bed's real kube-apiserver with the CRD from crds/: a valid
 * health check is admitted with every default filled in, and status.health as the operator writes
 * it is accepted by the status subresource. The specs that must be refused are shared admission
 * cases (test/fixtures/admission-cases.ts), sent to the apiserver by admission-cases.test.ts.
 *
 * Every spec and status is sent with server-side dry run: it passes defaulting, the schema and
 * the CEL rules exactly as a real write would, but nothing is stored, so no operator running on the
 * bed acts on it (the status test alone creates one object, for a moment, to have a status to
 * write to). Strict field validation makes a field missing from the schema fail the valid cases
 * instead of being pruned without a word.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { CoreV1Api, CustomObjectsApi, PatchStrategy, setHeaderOptions, type KubeConfig } from '@kubernetes/client-node';
import {
  API_VERSION,
  GROUP,
  SERVICE_INSTANCE_KIND,
  SERVICE_INSTANCE_PLURAL,
  VERSION,
  type EndpointHealthSummary,
  type HealthCheck,
  type ServiceInstance,
} from '../../src/api/v1alpha1/types.ts';
import { ADMISSION_CASES } from '../fixtures/admission-cases.ts';
import { adminKubeConfig, uniqueSuffix } from '../support/env.ts';
import { apiserverRefusal, createNamespace, installCrds } from '../support/kube.ts';

const sfx = uniqueSuffix();
const namespace = `health-admission-${sfx}`;
const ENDPOINTS = [{ address: '192.0.2.10', port: 8080 }];
/** What the CRD fills in when the timing fields are left out. */
const TIMING_DEFAULTS = { intervalSeconds: 10, timeoutSeconds: 1, failureThreshold: 3, successThreshold: 1, panicThresholdPercent: 50 };

let kc: KubeConfig;

/** Sends a ServiceInstance with server-side dry run; returns the object as it would be stored. */
async function dryRunCreate(name: string, spec: Record<string, unknown>): Promise<ServiceInstance> {
  return (await kc.makeApiClient(CustomObjectsApi).createNamespacedCustomObject({
    group: GROUP,
    version: VERSION,
    namespace,
    plural: SERVICE_INSTANCE_PLURAL,
    body: { apiVersion: API_VERSION, kind: SERVICE_INSTANCE_KIND, metadata: { name }, spec },
    dryRun: 'All',
    fieldValidation: 'Strict',
  })) as ServiceInstance;
}

/** Merge-patches status.health of an existing ServiceInstance with server-side dry run; returns the result. */
async function dryRunStatus(name: string, health: unknown): Promise<ServiceInstance> {
  return (await kc
    .makeApiClient(CustomObjectsApi)
    .patchNamespacedCustomObjectStatus(
      { group: GROUP, version: VERSION, namespace, plural: SERVICE_INSTANCE_PLURAL, name, body: { status: { health } }, dryRun: 'All' },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    )) as ServiceInstance;
}

/** A spec with static endpoints and the given health check. */
function withCheck(healthCheck: Record<string, unknown>): Record<string, unknown> {
  return { service: 'checked', endpoints: ENDPOINTS, healthCheck };
}

/**
 * What the CRD stores for each admitted health-check case of the shared fixture, named as there:
 * the spec sent is the fixture's, so the two cannot drift apart.
 */
const ADMITTED_DEFAULTS: readonly { name: string; want: HealthCheck }[] = [
  {
    name: 'an http check with every optional field is admitted, with scheme http and the timing defaults filled in',
    want: {
      http: {
        path: '/healthz?full=1',
        port: 8081,
        scheme: 'http',
        headers: { 'X-Probe': '1', "Token!#$%&'*+-.^_`|~9": 'v' },
        expectedStatuses: [200, '204', '200-399'],
        expectedJSON: { db: 'ok', 'deps.redis': 'ok', 'replicas.0.state': 'up' },
      },
      ...TIMING_DEFAULTS,
    },
  },
  {
    name: 'an https check that skips certificate verification is admitted',
    want: { http: { path: '/', scheme: 'https', insecureSkipVerify: true }, ...TIMING_DEFAULTS },
  },
  {
    name: 'a tcp check without a port (the endpoint’s own) is admitted',
    want: { tcp: {}, ...TIMING_DEFAULTS },
  },
  {
    name: 'a grpc check without a service name asks for the server’s overall health ("")',
    want: { grpc: { port: 9090, service: '' }, ...TIMING_DEFAULTS },
  },
  {
    name: 'a timeout equal to the interval, the largest thresholds and panic mode off are admitted as written',
    want: {
      tcp: { port: 5432 },
      intervalSeconds: 3600,
      timeoutSeconds: 3600,
      failureThreshold: 100,
      successThreshold: 100,
      panicThresholdPercent: 0,
    },
  },
];

/** The spec of the admitted shared case `name`; throws if the fixture has no such admitted case. */
function fixtureSpec(name: string): Record<string, unknown> {
  const found = ADMISSION_CASES.find((c) => c.name === name && c.valid);
  if (found === undefined) throw new Error(`test/fixtures/admission-cases.ts has no admitted case named ${JSON.stringify(name)}`);
  return (found.object as { spec: Record<string, unknown> }).spec;
}

describe('spec.healthCheck at admission', () => {
  before(async () => {
    kc = adminKubeConfig();
    await installCrds(kc);
    await createNamespace(kc, namespace);
  });

  after(async () => {
    await kc.makeApiClient(CoreV1Api).deleteNamespace({ name: namespace });
  });

  ADMITTED_DEFAULTS.forEach(({ name, want }, i) => {
    test(name, async () => {
      const created = await dryRunCreate(`admitted-${i}`, fixtureSpec(name));
      assert.deepEqual(created.spec.healthCheck, want);
    });
  });

  test('status.health as the operator writes it is accepted, and more than 10 unhealthy endpoints are refused', async () => {
    const name = 'status-health';
    await kc.makeApiClient(CustomObjectsApi).createNamespacedCustomObject({
      group: GROUP,
      version: VERSION,
      namespace,
      plural: SERVICE_INSTANCE_PLURAL,
      body: { apiVersion: API_VERSION, kind: SERVICE_INSTANCE_KIND, metadata: { name }, spec: withCheck({ tcp: {} }) },
    });
    try {
      const unhealthy = (i: number) => ({
        address: `192.0.2.${i}`,
        port: 8080,
        lastFailure: 'x'.repeat(256),
        since: '2026-01-02T03:04:05Z',
      });
      const health: EndpointHealthSummary = {
        healthy: 1,
        unhealthy: 10,
        unknown: 2,
        panic: true,
        unhealthyEndpoints: Array.from({ length: 10 }, (_, i) => unhealthy(i)),
      };
      assert.deepEqual((await dryRunStatus(name, health)).status?.health, health);
      const tooMany = { ...health, unhealthy: 11, unhealthyEndpoints: Array.from({ length: 11 }, (_, i) => unhealthy(i)) };
      const message = await apiserverRefusal(() => dryRunStatus(name, tooMany));
      assert.match(message ?? 'admitted', /status\.health\.unhealthyEndpoints: Too many: 11: must have at most 10 items/);
    } finally {
      await kc
        .makeApiClient(CustomObjectsApi)
        .deleteNamespacedCustomObject({ group: GROUP, version: VERSION, namespace, plural: SERVICE_INSTANCE_PLURAL, name });
    }
  });
});
