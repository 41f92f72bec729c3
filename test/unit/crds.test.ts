/**
 * The CRDs under crds/ against their contract (DESIGN.md §1) and against the hand-kept TypeScript
 * types and checks in src/api/v1alpha1, without a server: what `kubectl explain` shows, what
 * `kubectl get` prints, which fields exist and which the apiserver guarantees, and that the
 * operator's own validation agrees with admission on the admission cases.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { load } from 'js-yaml';
import {
  API_VERSION,
  CONDITION_FIELDS,
  CONDITION_STATUSES,
  CONSUL_REGISTRY_FIELDS,
  ConditionReason,
  ENDPOINT_COUNTS_FIELDS,
  ETCD_REGISTRY_FIELDS,
  ENDPOINT_HEALTH_SUMMARY_FIELDS,
  ETCD_VALUE_FORMATS,
  FINALIZER,
  GROUP,
  GRPC_HEALTH_CHECK_FIELDS,
  HEALTH_CHECK_FIELDS,
  HTTP_HEALTH_CHECK_FIELDS,
  HTTP_HEALTH_CHECK_SCHEMES,
  LABEL_SELECTOR_FIELDS,
  LABEL_SELECTOR_OPERATORS,
  LABEL_SELECTOR_REQUIREMENT_FIELDS,
  REGISTRATION_FIELDS,
  REGISTRY_KIND,
  REGISTRY_LIST_KIND,
  REGISTRY_PLURAL,
  REGISTRY_POLICIES,
  REGISTRY_SPEC_FIELDS,
  REGISTRY_STATUS_FIELDS,
  REGISTRY_LEASE_FIELDS,
  REGISTRY_TYPES,
  ZOOKEEPER_REGISTRY_FIELDS,
  ZOOKEEPER_VALUE_FORMATS,
  RegistryConditionType,
  SECRET_REFERENCE_FIELDS,
  SERVICE_INSTANCE_KIND,
  SERVICE_INSTANCE_LIST_KIND,
  SERVICE_INSTANCE_PLURAL,
  SERVICE_INSTANCE_SPEC_FIELDS,
  SERVICE_INSTANCE_STATUS_FIELDS,
  STATIC_ENDPOINT_FIELDS,
  ServiceInstanceConditionType,
  TCP_HEALTH_CHECK_FIELDS,
  UNHEALTHY_ENDPOINT_FIELDS,
  VERSION,
  type FieldPresence,
  type RegistrySpec,
  type ServiceInstanceSpec,
} from '../../src/api/v1alpha1/types.ts';
import { healthCheckDefaults, InvalidHealthCheckError, withDefaults as withHealthCheckDefaults } from '../../src/health/types.ts';
import { HEALTH_OUTPUT_MAX } from '../../src/registry/types.ts';
import { VALIDATION_MESSAGES, validateRegistrySpec, validateServiceInstanceSpec } from '../support/crd-rules.ts';
import { ADMISSION_CASES } from '../fixtures/admission-cases.ts';

/** The parts of an OpenAPI v3 schema node that these tests read. */
interface Schema {
  readonly type?: string;
  readonly description?: string;
  readonly properties?: Readonly<Record<string, Schema>>;
  readonly items?: Schema;
  readonly additionalProperties?: Schema | boolean;
  readonly required?: readonly string[];
  readonly enum?: readonly unknown[];
  readonly default?: unknown;
  readonly pattern?: string;
  readonly minimum?: number;
  readonly maximum?: number;
  readonly maxLength?: number;
  readonly maxItems?: number;
  readonly maxProperties?: number;
  readonly 'x-kubernetes-int-or-string'?: boolean;
  readonly 'x-kubernetes-validations'?: readonly { readonly rule: string; readonly message?: string }[];
}

interface PrinterColumn {
  readonly name: string;
  readonly type: string;
  readonly jsonPath: string;
  readonly description?: string;
  readonly priority?: number;
}

interface Crd {
  readonly apiVersion: string;
  readonly kind: string;
  readonly metadata: { readonly name: string };
  readonly spec: {
    readonly group: string;
    readonly scope: string;
    readonly names: {
      readonly kind: string;
      readonly listKind: string;
      readonly plural: string;
      readonly singular: string;
      readonly shortNames?: readonly string[];
      readonly categories?: readonly string[];
    };
    readonly versions: readonly {
      readonly name: string;
      readonly served: boolean;
      readonly storage: boolean;
      readonly subresources?: { readonly status?: object };
      readonly additionalPrinterColumns?: readonly PrinterColumn[];
      readonly schema: { readonly openAPIV3Schema: Schema };
    }[];
  };
}

function readCrd(file: string): Crd {
  const doc = load(readFileSync(new URL(`../../crds/${file}`, import.meta.url), 'utf8')) as Crd;
  assert.equal(doc.kind, 'CustomResourceDefinition', `${file} holds one CustomResourceDefinition`);
  return doc;
}

const SERVICE_INSTANCE_CRD = readCrd('registrar.dev_serviceinstances.yaml');
const REGISTRY_CRD = readCrd('registrar.dev_registries.yaml');
const CRDS = [
  { label: 'ServiceInstance', crd: SERVICE_INSTANCE_CRD },
  { label: 'Registry', crd: REGISTRY_CRD },
] as const;

function rootSchema(crd: Crd): Schema {
  const version = crd.spec.versions[0];
  assert.ok(version, `${crd.metadata.name} has a version`);
  return version.schema.openAPIV3Schema;
}

/** Calls `visit` on every schema node under `node`, with a path like `spec.endpoints[].tags{}`. */
function walk(node: Schema, path: string, visit: (node: Schema, path: string) => void): void {
  visit(node, path);
  for (const [name, child] of Object.entries(node.properties ?? {})) walk(child, path === '' ? name : `${path}.${name}`, visit);
  if (node.items !== undefined) walk(node.items, `${path}[]`, visit);
  if (typeof node.additionalProperties === 'object') walk(node.additionalProperties, `${path}{}`, visit);
}

/** The node at a path written as in {@link walk}, e.g. `spec.endpoints[]`. */
function nodeAt(root: Schema, path: string): Schema {
  let node = root;
  for (const part of path.split('.')) {
    const name = part.replace(/\[\]$/, '');
    const child = node.properties?.[name];
    assert.ok(child, `schema has ${path} (missing at ${part})`);
    node = part.endsWith('[]') ? (child.items ?? assert.fail(`${path}: ${name} has no items`)) : child;
  }
  return node;
}

test('both CRDs are apiextensions.k8s.io/v1, in group registrar.dev, and named plural.group', () => {
  for (const { crd } of CRDS) {
    assert.equal(crd.apiVersion, 'apiextensions.k8s.io/v1');
    assert.equal(crd.spec.group, GROUP);
    assert.equal(crd.metadata.name, `${crd.spec.names.plural}.${GROUP}`);
  }
});

test('the API constants agree with the CRDs and with each other', () => {
  assert.equal(API_VERSION, `${GROUP}/${VERSION}`);
  assert.equal(FINALIZER, `${GROUP}/finalizer`);
  const si = SERVICE_INSTANCE_CRD.spec.names;
  assert.deepEqual([si.kind, si.listKind, si.plural], [SERVICE_INSTANCE_KIND, SERVICE_INSTANCE_LIST_KIND, SERVICE_INSTANCE_PLURAL]);
  const reg = REGISTRY_CRD.spec.names;
  assert.deepEqual([reg.kind, reg.listKind, reg.plural], [REGISTRY_KIND, REGISTRY_LIST_KIND, REGISTRY_PLURAL]);
});

const NAMES_CASES = [
  {
    name: 'ServiceInstance is namespaced, singular serviceinstance, short name si, in category registrar',
    crd: SERVICE_INSTANCE_CRD,
    want: { scope: 'Namespaced', singular: 'serviceinstance', shortNames: ['si'], categories: ['registrar'] },
  },
  {
    name: 'Registry is cluster-scoped, singular registry, short name reg, in category registrar',
    crd: REGISTRY_CRD,
    want: { scope: 'Cluster', singular: 'registry', shortNames: ['reg'], categories: ['registrar'] },
  },
];

for (const { name, crd, want } of NAMES_CASES) {
  test(name, () => {
    const { names, scope } = crd.spec;
    assert.deepEqual({ scope, singular: names.singular, shortNames: names.shortNames, categories: names.categories }, want);
  });
}

for (const { label, crd } of CRDS) {
  test(`${label} has exactly one version, v1alpha1, served and stored, with the status subresource`, () => {
    assert.equal(crd.spec.versions.length, 1);
    const [version] = crd.spec.versions;
    assert.ok(version);
    assert.equal(version.name, VERSION);
    assert.equal(version.served, true);
    assert.equal(version.storage, true);
    assert.deepEqual(version.subresources?.status, {});
  });
}

const PRINTER_COLUMN_CASES = [
  {
    name: 'kubectl get serviceinstances prints SERVICE, READY as ready/total, REGISTERED and AGE, and HEALTHY with -o wide',
    crd: SERVICE_INSTANCE_CRD,
    want: [
      { name: 'Service', type: 'string', jsonPath: '.spec.service' },
      { name: 'Ready', type: 'string', jsonPath: '.status.readyRatio' },
      { name: 'Registered', type: 'integer', jsonPath: '.status.endpoints.registered' },
      { name: 'Healthy', type: 'integer', jsonPath: '.status.health.healthy', priority: 1 },
      { name: 'Age', type: 'date', jsonPath: '.metadata.creationTimestamp' },
    ],
  },
  {
    name: 'kubectl get registries prints TYPE, DEFAULT, ENTRIES, READY from the Ready condition and AGE',
    crd: REGISTRY_CRD,
    want: [
      { name: 'Type', type: 'string', jsonPath: '.spec.type' },
      { name: 'Default', type: 'boolean', jsonPath: '.spec.default' },
      { name: 'Entries', type: 'integer', jsonPath: '.status.entries' },
      { name: 'Ready', type: 'string', jsonPath: '.status.conditions[?(@.type=="Ready")].status' },
      { name: 'Age', type: 'date', jsonPath: '.metadata.creationTimestamp' },
    ],
  },
];

for (const { name, crd, want } of PRINTER_COLUMN_CASES) {
  test(name, () => {
    const columns = crd.spec.versions[0]?.additionalPrinterColumns ?? [];
    assert.deepEqual(
      columns.map(({ name, type, jsonPath, priority }) => ({ name, type, jsonPath, ...(priority === undefined ? {} : { priority }) })),
      want,
    );
  });
}

for (const { label, crd } of CRDS) {
  test(`every ${label} printer column reads a field that the schema declares`, () => {
    const root = rootSchema(crd);
    for (const column of crd.spec.versions[0]?.additionalPrinterColumns ?? []) {
      if (column.jsonPath.startsWith('.metadata.')) continue;
      // A filter such as [?(@.type=="Ready")] selects list items; the field is that of the list.
      const path = column.jsonPath.slice(1).replace(/\[\?\(@\.type=="[A-Za-z]+"\)\]/, '[]');
      nodeAt(root, path);
    }
  });
}

for (const { label, crd } of CRDS) {
  test(`every ${label} field at every depth has a description, so kubectl explain teaches the API`, () => {
    const missing: string[] = [];
    walk(rootSchema(crd), '', (node, path) => {
      // The apiserver forbids anything but `type` on the root metadata; kubectl explain fills it in.
      if (path === 'metadata') return;
      const isField = !path.endsWith('[]') && !path.endsWith('{}');
      const isObjectItem = path.endsWith('[]') && node.type === 'object';
      if ((isField || isObjectItem) && (node.description ?? '').trim() === '') missing.push(path === '' ? '<root>' : path);
    });
    assert.deepEqual(missing, []);
  });
}

/** Field tables of types.ts and where they sit in the schemas. */
const FIELD_TABLE_CASES: readonly { name: string; crd: Crd; path: string; table: Readonly<Record<string, FieldPresence>> }[] = [
  { name: 'ServiceInstance spec', crd: SERVICE_INSTANCE_CRD, path: 'spec', table: SERVICE_INSTANCE_SPEC_FIELDS },
  { name: 'ServiceInstance spec.selector', crd: SERVICE_INSTANCE_CRD, path: 'spec.selector', table: LABEL_SELECTOR_FIELDS },
  {
    name: 'ServiceInstance spec.selector.matchExpressions[]',
    crd: SERVICE_INSTANCE_CRD,
    path: 'spec.selector.matchExpressions[]',
    table: LABEL_SELECTOR_REQUIREMENT_FIELDS,
  },
  { name: 'ServiceInstance spec.endpoints[]', crd: SERVICE_INSTANCE_CRD, path: 'spec.endpoints[]', table: STATIC_ENDPOINT_FIELDS },
  { name: 'ServiceInstance spec.healthCheck', crd: SERVICE_INSTANCE_CRD, path: 'spec.healthCheck', table: HEALTH_CHECK_FIELDS },
  {
    name: 'ServiceInstance spec.healthCheck.http',
    crd: SERVICE_INSTANCE_CRD,
    path: 'spec.healthCheck.http',
    table: HTTP_HEALTH_CHECK_FIELDS,
  },
  { name: 'ServiceInstance spec.healthCheck.tcp', crd: SERVICE_INSTANCE_CRD, path: 'spec.healthCheck.tcp', table: TCP_HEALTH_CHECK_FIELDS },
  {
    name: 'ServiceInstance spec.healthCheck.grpc',
    crd: SERVICE_INSTANCE_CRD,
    path: 'spec.healthCheck.grpc',
    table: GRPC_HEALTH_CHECK_FIELDS,
  },
  { name: 'ServiceInstance status', crd: SERVICE_INSTANCE_CRD, path: 'status', table: SERVICE_INSTANCE_STATUS_FIELDS },
  { name: 'ServiceInstance status.conditions[]', crd: SERVICE_INSTANCE_CRD, path: 'status.conditions[]', table: CONDITION_FIELDS },
  { name: 'ServiceInstance status.endpoints', crd: SERVICE_INSTANCE_CRD, path: 'status.endpoints', table: ENDPOINT_COUNTS_FIELDS },
  { name: 'ServiceInstance status.registrations[]', crd: SERVICE_INSTANCE_CRD, path: 'status.registrations[]', table: REGISTRATION_FIELDS },
  { name: 'ServiceInstance status.health', crd: SERVICE_INSTANCE_CRD, path: 'status.health', table: ENDPOINT_HEALTH_SUMMARY_FIELDS },
  {
    name: 'ServiceInstance status.health.unhealthyEndpoints[]',
    crd: SERVICE_INSTANCE_CRD,
    path: 'status.health.unhealthyEndpoints[]',
    table: UNHEALTHY_ENDPOINT_FIELDS,
  },
  { name: 'Registry spec', crd: REGISTRY_CRD, path: 'spec', table: REGISTRY_SPEC_FIELDS },
  { name: 'Registry spec.namespaceSelector', crd: REGISTRY_CRD, path: 'spec.namespaceSelector', table: LABEL_SELECTOR_FIELDS },
  {
    name: 'Registry spec.namespaceSelector.matchExpressions[]',
    crd: REGISTRY_CRD,
    path: 'spec.namespaceSelector.matchExpressions[]',
    table: LABEL_SELECTOR_REQUIREMENT_FIELDS,
  },
  { name: 'Registry spec.etcd', crd: REGISTRY_CRD, path: 'spec.etcd', table: ETCD_REGISTRY_FIELDS },
  {
    name: 'Registry spec.etcd.credentialsSecretRef',
    crd: REGISTRY_CRD,
    path: 'spec.etcd.credentialsSecretRef',
    table: SECRET_REFERENCE_FIELDS,
  },
  { name: 'Registry spec.consul', crd: REGISTRY_CRD, path: 'spec.consul', table: CONSUL_REGISTRY_FIELDS },
  { name: 'Registry spec.zookeeper', crd: REGISTRY_CRD, path: 'spec.zookeeper', table: ZOOKEEPER_REGISTRY_FIELDS },
  {
    name: 'Registry spec.zookeeper.credentialsSecretRef',
    crd: REGISTRY_CRD,
    path: 'spec.zookeeper.credentialsSecretRef',
    table: SECRET_REFERENCE_FIELDS,
  },
  { name: 'Registry spec.consul.tokenSecretRef', crd: REGISTRY_CRD, path: 'spec.consul.tokenSecretRef', table: SECRET_REFERENCE_FIELDS },
  { name: 'Registry status', crd: REGISTRY_CRD, path: 'status', table: REGISTRY_STATUS_FIELDS },
  { name: 'Registry status.leases[]', crd: REGISTRY_CRD, path: 'status.leases[]', table: REGISTRY_LEASE_FIELDS },
  { name: 'Registry status.conditions[]', crd: REGISTRY_CRD, path: 'status.conditions[]', table: CONDITION_FIELDS },
];

for (const { name, crd, path, table } of FIELD_TABLE_CASES) {
  test(`the TypeScript fields of ${name} are the schema's, required and defaulted alike`, () => {
    const node = nodeAt(rootSchema(crd), path);
    const schemaFields = Object.keys(node.properties ?? {}).sort();
    assert.deepEqual(Object.keys(table).sort(), schemaFields, 'same field names');
    const required = new Set(node.required ?? []);
    const fromSchema = Object.fromEntries(
      schemaFields.map((field): [string, FieldPresence] => {
        if (required.has(field)) return [field, 'required'];
        return [field, node.properties?.[field]?.default !== undefined ? 'defaulted' : 'optional'];
      }),
    );
    assert.deepEqual({ ...table }, fromSchema, 'same presence: required, defaulted or optional');
  });
}

const ENUM_CASES: readonly { name: string; crd: Crd; path: string; values: readonly string[] }[] = [
  { name: 'Registry spec.type', crd: REGISTRY_CRD, path: 'spec.type', values: REGISTRY_TYPES },
  { name: 'Registry spec.policy', crd: REGISTRY_CRD, path: 'spec.policy', values: REGISTRY_POLICIES },
  { name: 'Registry spec.etcd.format', crd: REGISTRY_CRD, path: 'spec.etcd.format', values: ETCD_VALUE_FORMATS },
  { name: 'Registry spec.zookeeper.format', crd: REGISTRY_CRD, path: 'spec.zookeeper.format', values: ZOOKEEPER_VALUE_FORMATS },
  {
    name: 'ServiceInstance spec.healthCheck.http.scheme',
    crd: SERVICE_INSTANCE_CRD,
    path: 'spec.healthCheck.http.scheme',
    values: HTTP_HEALTH_CHECK_SCHEMES,
  },
  {
    name: 'ServiceInstance selector operators',
    crd: SERVICE_INSTANCE_CRD,
    path: 'spec.selector.matchExpressions[].operator',
    values: LABEL_SELECTOR_OPERATORS,
  },
  {
    name: 'Registry namespaceSelector operators',
    crd: REGISTRY_CRD,
    path: 'spec.namespaceSelector.matchExpressions[].operator',
    values: LABEL_SELECTOR_OPERATORS,
  },
  { name: 'ServiceInstance condition statuses', crd: SERVICE_INSTANCE_CRD, path: 'status.conditions[].status', values: CONDITION_STATUSES },
  { name: 'Registry condition statuses', crd: REGISTRY_CRD, path: 'status.conditions[].status', values: CONDITION_STATUSES },
];

for (const { name, crd, path, values } of ENUM_CASES) {
  test(`the allowed values of ${name} are the same in the CRD and in TypeScript`, () => {
    assert.deepEqual(nodeAt(rootSchema(crd), path).enum, [...values]);
  });
}

test('the schema defaults are the documented ones', () => {
  const si = rootSchema(SERVICE_INSTANCE_CRD);
  const reg = rootSchema(REGISTRY_CRD);
  assert.deepEqual(
    {
      weight: nodeAt(si, 'spec.weight').default,
      default: nodeAt(reg, 'spec.default').default,
      namespace: nodeAt(reg, 'spec.namespace').default,
      leaseTTLSeconds: nodeAt(reg, 'spec.leaseTTLSeconds').default,
      policy: nodeAt(reg, 'spec.policy').default,
      dryRun: nodeAt(reg, 'spec.dryRun').default,
      prefix: nodeAt(reg, 'spec.etcd.prefix').default,
      format: nodeAt(reg, 'spec.etcd.format').default,
      consulNamespace: nodeAt(reg, 'spec.consul.namespace').default,
      serviceName: nodeAt(reg, 'spec.consul.serviceName').default,
    },
    {
      weight: 1,
      default: false,
      namespace: '{namespace}',
      leaseTTLSeconds: 30,
      policy: 'sync',
      dryRun: false,
      prefix: '/services',
      format: 'json',
      consulNamespace: '',
      serviceName: '{service}',
    },
  );
});

test('the health check defaults are the documented ones, and the same as the prober’s own', () => {
  const at = (field: string): unknown => nodeAt(rootSchema(SERVICE_INSTANCE_CRD), `spec.healthCheck.${field}`).default;
  const documented = { intervalSeconds: 10, timeoutSeconds: 1, failureThreshold: 3, successThreshold: 1, panicThresholdPercent: 50 };
  const timing = Object.keys(documented) as (keyof typeof documented)[];
  assert.deepEqual(Object.fromEntries(timing.map((field) => [field, at(field)])), documented, 'schema defaults');
  assert.deepEqual(Object.fromEntries(timing.map((field) => [field, healthCheckDefaults[field]])), documented, 'withDefaults() defaults');
  assert.equal(at('http.scheme'), 'http');
  assert.equal(at('grpc.service'), '');
  assert.equal(at('http.expectedStatuses'), undefined, 'absent means 200-399, applied by the prober, not stored');
});

const HEALTH_CHECK_TIMING_FIELDS = [
  'intervalSeconds',
  'timeoutSeconds',
  'failureThreshold',
  'successThreshold',
  'panicThresholdPercent',
] as const;

for (const field of HEALTH_CHECK_TIMING_FIELDS) {
  test(`the prober accepts every spec.healthCheck.${field} that admission accepts, and both refuse one below the minimum`, () => {
    const { minimum, maximum } = nodeAt(rootSchema(SERVICE_INSTANCE_CRD), `spec.healthCheck.${field}`);
    assert.ok(minimum !== undefined && maximum !== undefined, 'bounded both ways');
    // The largest interval, so that timeoutSeconds <= intervalSeconds holds at either bound.
    const spec = (value: number) => ({ tcp: {}, intervalSeconds: 3600, [field]: value });
    for (const value of [minimum, maximum]) assert.doesNotThrow(() => withHealthCheckDefaults(spec(value)), `${field} ${value}`);
    assert.throws(() => withHealthCheckDefaults(spec(minimum - 1)), InvalidHealthCheckError);
  });
}

test('status.health lastFailure holds a whole probe output, as the registries get it', () => {
  assert.equal(nodeAt(rootSchema(SERVICE_INSTANCE_CRD), 'status.health.unhealthyEndpoints[].lastFailure').maxLength, HEALTH_OUTPUT_MAX);
});

test('condition types and reasons fit the CRDs’ metav1.Condition patterns', () => {
  for (const { crd } of CRDS) {
    const typePattern = new RegExp(nodeAt(rootSchema(crd), 'status.conditions[].type').pattern ?? '');
    const reasonPattern = new RegExp(nodeAt(rootSchema(crd), 'status.conditions[].reason').pattern ?? '');
    for (const type of [...Object.values(ServiceInstanceConditionType), ...Object.values(RegistryConditionType)])
      assert.match(type, typePattern);
    for (const reason of Object.values(ConditionReason)) assert.match(reason, reasonPattern);
  }
});

for (const { label, crd } of CRDS) {
  test(`every ${label} CEL rule says in words what is wrong, in the same words as the rules model`, () => {
    const known = new Set<string>(Object.values(VALIDATION_MESSAGES));
    walk(rootSchema(crd), '', (node, path) => {
      for (const { rule, message } of node['x-kubernetes-validations'] ?? []) {
        assert.ok(message !== undefined && message.trim() !== '', `${path}: rule ${rule} has a message`);
        assert.ok(known.has(message), `${path}: message "${message}" is one of VALIDATION_MESSAGES`);
      }
    });
  });
}

for (const { label, crd } of CRDS) {
  test(`every string, list and map that a ${label} CEL rule can read is bounded, so the cost estimate stays low`, () => {
    const unbounded: string[] = [];
    walk(rootSchema(crd), '', (ruled, rulePath) => {
      if ((ruled['x-kubernetes-validations'] ?? []).length === 0) return;
      walk(ruled, rulePath, (node, path) => {
        const isString = node.type === 'string' || node['x-kubernetes-int-or-string'] === true;
        if (isString && node.maxLength === undefined && node.enum === undefined) unbounded.push(`${path} (maxLength)`);
        if (node.type === 'array' && node.maxItems === undefined) unbounded.push(`${path} (maxItems)`);
        if (typeof node.additionalProperties === 'object' && node.maxProperties === undefined) unbounded.push(`${path} (maxProperties)`);
      });
    });
    assert.deepEqual([...new Set(unbounded)], []);
  });
}

/** A copy of `value` with the schema's defaults filled in, as the apiserver does before validating. */
function withDefaults(value: unknown, node: Schema): unknown {
  if (Array.isArray(value)) return value.map((item: unknown) => (node.items ? withDefaults(item, node.items) : item));
  if (typeof value !== 'object' || value === null || node.properties === undefined) return value;
  const out: Record<string, unknown> = { ...(value as Record<string, unknown>) };
  for (const [name, child] of Object.entries(node.properties)) {
    if (out[name] === undefined && child.default !== undefined) out[name] = structuredClone(child.default);
    if (out[name] !== undefined) out[name] = withDefaults(out[name], child);
  }
  return out;
}

// Missing required fields are shape errors; the rules model takes typed specs and leaves those to admission.
const SHAPE_ONLY_MESSAGES = new Set(['Required value']);

for (const c of ADMISSION_CASES) {
  if (c.messageIncludes !== undefined && SHAPE_ONLY_MESSAGES.has(c.messageIncludes)) continue;
  test(`the rules model agrees with admission: ${c.name}`, () => {
    const { kind } = c.object as { kind: string };
    const crd = kind === SERVICE_INSTANCE_KIND ? SERVICE_INSTANCE_CRD : REGISTRY_CRD;
    const { spec } = withDefaults(c.object, rootSchema(crd)) as { spec: unknown };
    const problems =
      kind === SERVICE_INSTANCE_KIND
        ? validateServiceInstanceSpec(spec as ServiceInstanceSpec)
        : validateRegistrySpec(spec as RegistrySpec);
    if (c.valid) {
      assert.deepEqual(problems, []);
      return;
    }
    assert.notDeepEqual(problems, [], 'at least one problem');
    const ours = c.messageIncludes !== undefined && Object.values(VALIDATION_MESSAGES).some((m) => m.includes(c.messageIncludes ?? ''));
    if (ours)
      assert.ok(
        problems.some((p) => p.includes(c.messageIncludes ?? '')),
        `a problem says "${c.messageIncludes}": ${problems.join(' | ')}`,
      );
  });
}

const VALIDATE_ONLY_CASES: readonly { name: string; spec: ServiceInstanceSpec; want: readonly string[] }[] = [
  {
    name: 'the same static address and port listed twice is reported at the second entry',
    spec: { service: 'user', endpoints: [{ address: '10.0.0.1', port: 80 }, { address: '10.0.0.1' }], port: 80, weight: 1 },
    want: [`spec.endpoints[1]: ${VALIDATION_MESSAGES.duplicateEndpoint}`],
  },
  {
    name: 'one address on two ports is two endpoints, not a duplicate',
    spec: {
      service: 'user',
      endpoints: [
        { address: '10.0.0.1', port: 80 },
        { address: '10.0.0.1', port: 81 },
      ],
      weight: 1,
    },
    want: [],
  },
  {
    name: 'an IPv6 address with a zone is refused, as the apiserver’s isIP does',
    spec: { service: 'user', endpoints: [{ address: 'fe80::1%eth0', port: 80 }], weight: 1 },
    want: [`spec.endpoints[0].address: ${VALIDATION_MESSAGES.address}`],
  },
];

for (const { name, spec, want } of VALIDATE_ONLY_CASES) {
  test(`rules model: ${name}`, () => {
    assert.deepEqual(validateServiceInstanceSpec(spec), want);
  });
}

/** A spec with one static endpoint and `healthCheck`, with the CRD's defaults filled in as the apiserver does. */
function healthChecked(healthCheck: Record<string, unknown>): ServiceInstanceSpec {
  const spec = { service: 'checked', endpoints: [{ address: '192.0.2.10', port: 8080 }], healthCheck };
  return withDefaults(spec, nodeAt(rootSchema(SERVICE_INSTANCE_CRD), 'spec')) as ServiceInstanceSpec;
}

/** An http check of /healthz with `fields` over it. */
function httpCheck(fields: Record<string, unknown>): Record<string, unknown> {
  return { http: { path: '/healthz', ...fields } };
}

/** A map of `count` entries with distinct keys. */
function entries(count: number): Record<string, string> {
  return Object.fromEntries(Array.from({ length: count }, (_, i) => [`k${i}`, 'v']));
}

// Bounds of spec.healthCheck that the admission cases do not reach, read off the CRD: the model's alone, not yet sent to an apiserver.
const HEALTH_CHECK_MODEL_CASES: readonly { name: string; spec: ServiceInstanceSpec; want: readonly string[] }[] = [
  {
    name: 'every timing field out of its bounds is reported at that field',
    spec: healthChecked({
      tcp: {},
      intervalSeconds: 3601,
      timeoutSeconds: 0,
      failureThreshold: 0,
      successThreshold: 101,
      panicThresholdPercent: -1,
    }),
    want: [
      `spec.healthCheck.intervalSeconds: ${VALIDATION_MESSAGES.healthCheckInterval}`,
      `spec.healthCheck.timeoutSeconds: ${VALIDATION_MESSAGES.healthCheckTimeoutRange}`,
      `spec.healthCheck.failureThreshold: ${VALIDATION_MESSAGES.failureThreshold}`,
      `spec.healthCheck.successThreshold: ${VALIDATION_MESSAGES.successThreshold}`,
      `spec.healthCheck.panicThresholdPercent: ${VALIDATION_MESSAGES.panicThreshold}`,
    ],
  },
  {
    name: 'an http port of 0 is refused',
    spec: healthChecked(httpCheck({ port: 0 })),
    want: [`spec.healthCheck.http.port: ${VALIDATION_MESSAGES.endpointPort}`],
  },
  {
    name: 'a tcp port of 0 is refused',
    spec: healthChecked({ tcp: { port: 0 } }),
    want: [`spec.healthCheck.tcp.port: ${VALIDATION_MESSAGES.endpointPort}`],
  },
  {
    name: 'a grpc port of 65536 is refused',
    spec: healthChecked({ grpc: { port: 65536 } }),
    want: [`spec.healthCheck.grpc.port: ${VALIDATION_MESSAGES.endpointPort}`],
  },
  {
    name: 'a grpc service name over 256 characters is refused',
    spec: healthChecked({ grpc: { service: 'a'.repeat(257) } }),
    want: [`spec.healthCheck.grpc.service: ${VALIDATION_MESSAGES.grpcService}`],
  },
  {
    name: 'an http scheme other than http and https is refused',
    spec: healthChecked(httpCheck({ scheme: 'ftp' })),
    want: [`spec.healthCheck.http.scheme: ${VALIDATION_MESSAGES.httpScheme}`],
  },
  {
    name: 'a path with a tab is refused',
    spec: healthChecked(httpCheck({ path: '/health\tz' })),
    want: [`spec.healthCheck.http.path: ${VALIDATION_MESSAGES.httpPath}`],
  },
  {
    name: 'a path with a no-break space is accepted, as RE2’s \\S does',
    spec: healthChecked(httpCheck({ path: '/health\u00a0z' })),
    want: [],
  },
  {
    name: 'a path over 1024 characters is refused',
    spec: healthChecked(httpCheck({ path: `/${'a'.repeat(1024)}` })),
    want: [`spec.healthCheck.http.path: ${VALIDATION_MESSAGES.httpPathLength}`],
  },
  {
    name: 'a header name over 256 characters, a value over 1024 and 17 headers are refused',
    spec: healthChecked(httpCheck({ headers: { ...entries(15), ['X'.repeat(257)]: '1', 'X-Long': 'v'.repeat(1025) } })),
    want: [
      `spec.healthCheck.http.headers: must have at most 16 entries, has 17`,
      `spec.healthCheck.http.headers["${'X'.repeat(257)}"]: ${VALIDATION_MESSAGES.headerName}`,
      `spec.healthCheck.http.headers["X-Long"]: ${VALIDATION_MESSAGES.headerValueLength}`,
    ],
  },
  {
    name: 'a one-code range, a code as a string and the lowest code are accepted as expected statuses',
    spec: healthChecked(httpCheck({ expectedStatuses: ['200-200', '599', 100] })),
    want: [],
  },
  {
    name: 'codes outside 100-599 and ranges with a short bound are refused as expected statuses',
    spec: healthChecked(httpCheck({ expectedStatuses: ['600', '099', '20-399', 99] })),
    want: [0, 1, 2, 3].map((i) => `spec.healthCheck.http.expectedStatuses[${i}]: ${VALIDATION_MESSAGES.expectedStatus}`),
  },
  {
    name: '17 expected statuses are refused',
    spec: healthChecked(httpCheck({ expectedStatuses: Array.from({ length: 17 }, () => 200) })),
    want: ['spec.healthCheck.http.expectedStatuses: must have at most 16 entries, has 17'],
  },
  {
    name: 'expectedJSON paths starting or ending with a dot, a value over 1024 characters and 33 entries are refused',
    spec: healthChecked(httpCheck({ expectedJSON: { ...entries(30), '.a': 'x', 'a.': 'x', long: 'v'.repeat(1025) } })),
    want: [
      'spec.healthCheck.http.expectedJSON: must have at most 32 entries, has 33',
      `spec.healthCheck.http.expectedJSON[".a"]: ${VALIDATION_MESSAGES.expectedJSONKey}`,
      `spec.healthCheck.http.expectedJSON["a."]: ${VALIDATION_MESSAGES.expectedJSONKey}`,
      `spec.healthCheck.http.expectedJSON["long"]: ${VALIDATION_MESSAGES.expectedJSONValue}`,
    ],
  },
];

for (const { name, spec, want } of HEALTH_CHECK_MODEL_CASES) {
  test(`rules model, spec.healthCheck: ${name}`, () => {
    assert.deepEqual(validateServiceInstanceSpec(spec), want);
  });
}
