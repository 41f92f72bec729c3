/**
 * An independent model of the CRDs' admission rules, for the tests: every OpenAPI and CEL rule of
 * crds/ written out again in TypeScript, with the CEL messages word for word. test/unit/crds.test.ts
 * runs the admission cases of test/fixtures/admission-cases.ts through this model and
 * test/integration/admission-cases.test.ts runs them through the real apiserver, so a rule changed
 * in the CRD and not here fails a test, and every CEL message is checked to say what is wrong.
 *
 * It lives with the tests because the operator does not use it: admission refuses what these
 * rules refuse, and what is left (duplicate static endpoints, unknown port names) is reported by
 * the endpoint source on the object without stopping the rest.
 */
import { isIP } from 'node:net';
import {
  ETCD_VALUE_FORMATS,
  HTTP_HEALTH_CHECK_SCHEMES,
  LABEL_SELECTOR_OPERATORS,
  REGISTRY_POLICIES,
  REGISTRY_TYPES,
  SERVICE_PLACEHOLDER,
  ZOOKEEPER_VALUE_FORMATS,
  type HealthCheck,
  type HttpHealthCheck,
  type LabelSelector,
  type RegistrySpec,
  type SecretReference,
  type ServiceInstanceSpec,
} from '../../src/api/v1alpha1/types.ts';

/** User-facing messages of the checks; those of CEL rules match the CRDs exactly. */
export const VALIDATION_MESSAGES = {
  exactlyOneSource:
    'exactly one of spec.selector or spec.endpoints must be set: use selector to mirror Ready pods, or endpoints to list static addresses',
  selectorNeedsPort:
    'spec.port is required when spec.selector is set: it is the container port number or name to register for each Ready pod',
  endpointNeedsPort: 'every static endpoint needs a port: set port on each entry of spec.endpoints, or set spec.port to a port number',
  emptySelector: 'spec.selector must not be empty, or it would register every pod in the namespace: add matchLabels or matchExpressions',
  labelKey:
    "matchLabels keys must be label keys: an optional DNS subdomain prefix and '/', then a name of at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
  labelValue: "label values must be at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
  selectorValues: 'values must be non-empty when operator is In or NotIn, and empty when operator is Exists or DoesNotExist',
  selectorOperator: 'operator must be one of In, NotIn, Exists, DoesNotExist',
  address:
    "address must be an IPv4 address, an IPv6 address or a lowercase DNS-1123 host name, with no scheme, port, '/' or spaces, e.g. 10.0.0.12 or vm-12.example.com",
  tagKey: "tag keys must be 1-63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit (no '/', '=' or ',')",
  tagValue: 'tag values must be at most 256 characters long',
  port: "spec.port must be a port number from 1 to 65535 or a container port name (at most 15 lowercase letters, digits and '-', with at least one letter, e.g. http)",
  metadataKey: 'metadata keys must be 1-128 characters long',
  metadataValue: 'metadata values must be at most 512 characters long',
  serviceName:
    "spec.service must be a DNS-1123 label: at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit, e.g. user-service",
  registryName: "Registry names must be DNS-1123 subdomains (lowercase letters, digits, '-' and '.')",
  endpointPort: 'port must be a whole number from 1 to 65535',
  weight: 'weight must be a whole number from 0 to 1000',
  duplicateEndpoint: 'the same address and port is listed more than once; each static endpoint must be unique',
  duplicateRegistry: 'this Registry is named more than once; name each Registry once',
  duplicateEtcdEndpoint: 'this etcd endpoint is listed more than once; list each once',
  registryType: "spec.type must be 'etcd', 'consul' or 'zookeeper'",
  etcdRequired: 'spec.etcd is required when spec.type is etcd',
  etcdForbidden: 'spec.etcd may only be set when spec.type is etcd',
  consulRequired: 'spec.consul is required when spec.type is consul',
  consulForbidden: 'spec.consul may only be set when spec.type is consul',
  zookeeperRequired: 'spec.zookeeper is required when spec.type is zookeeper',
  zookeeperForbidden: 'spec.zookeeper may only be set when spec.type is zookeeper',
  zookeeperServers:
    "spec.zookeeper.servers must be host:port pairs separated by ',' with an optional chroot path, e.g. zk-0:2181,zk-1:2181 or zk-0:2181/discovery",
  zookeeperBasePath:
    "spec.zookeeper.basePath must be an absolute path of segments of letters, digits, '-', '_' and '.' (not starting with '.'), with no trailing '/', e.g. /services",
  zookeeperReserved: 'spec.zookeeper.basePath must not lie under /zookeeper, which ZooKeeper reserves',
  zookeeperFormat: "spec.zookeeper.format must be 'curator', 'hostport' or 'json'",
  zookeeperSessionTimeout: 'spec.zookeeper.sessionTimeoutSeconds must be a whole number of seconds from 2 to 600',
  namespaceTemplate:
    "spec.namespace may contain only lowercase letters, digits, '-' and the placeholder {namespace} (no '/', '.' or other placeholders), e.g. {namespace} or prod-{namespace}",
  leaseTTL: 'spec.leaseTTLSeconds must be a whole number of seconds from 5 to 3600',
  policy: "spec.policy must be 'sync' or 'upsert-only'",
  etcdEndpoints: 'spec.etcd.endpoints must list at least one etcd URL',
  etcdEndpoint: 'each etcd endpoint must be an http:// or https:// URL with a host and optional port and no path, e.g. https://etcd-0:2379',
  prefixEnd: "spec.etcd.prefix must not end with '/', e.g. /services",
  prefixEmptySegment: "spec.etcd.prefix must not contain '//' (an empty segment)",
  prefixDotSegment: "spec.etcd.prefix must not contain '.' or '..' segments",
  prefixChars: "spec.etcd.prefix may contain only letters, digits, '/', '-', '_' and '.'",
  format: "spec.etcd.format must be 'json', 'grpc' or 'hostport'",
  consulAddress:
    'spec.consul.address must be an http:// or https:// URL with a host and optional port and no path, e.g. http://consul:8500',
  consulDatacenter: "spec.consul.datacenter may contain only letters, digits, '-' and '_'",
  consulNamespace: "spec.consul.namespace may contain only lowercase letters, digits, '-' and the placeholder {namespace}",
  serviceNameChars:
    "spec.consul.serviceName may contain only lowercase letters, digits, '-' and the placeholders {service} and {namespace}",
  serviceNameNeedsService: 'spec.consul.serviceName must contain {service}, or every service would be registered under the same name',
  secretRef: 'a Secret reference needs a name (a DNS-1123 subdomain) and a namespace (a DNS-1123 label)',
  healthCheckStaticOnly:
    'spec.healthCheck is only for static endpoints (spec.endpoints): pods chosen by spec.selector are judged by their own readiness probes, so remove healthCheck or list the endpoints',
  healthCheckKind: 'spec.healthCheck must set exactly one of http, tcp or grpc',
  healthCheckTimeout:
    'spec.healthCheck.timeoutSeconds must not be greater than intervalSeconds: a probe must be over before the next one starts',
  healthCheckInterval: 'spec.healthCheck.intervalSeconds must be a whole number of seconds from 1 to 3600',
  healthCheckTimeoutRange: 'spec.healthCheck.timeoutSeconds must be a whole number of seconds from 1 to 3600',
  failureThreshold: 'spec.healthCheck.failureThreshold must be a whole number from 1 to 100',
  successThreshold: 'spec.healthCheck.successThreshold must be a whole number from 1 to 100',
  panicThreshold: 'spec.healthCheck.panicThresholdPercent must be a whole number from 0 to 100',
  httpScheme: "spec.healthCheck.http.scheme must be 'http' or 'https'",
  insecureSkipVerify:
    "spec.healthCheck.http.insecureSkipVerify may be true only with scheme https: it turns off the check of the server's TLS certificate",
  httpPath: "spec.healthCheck.http.path must start with '/' and contain no whitespace, e.g. /healthz",
  httpPathLength: 'spec.healthCheck.http.path must be at most 1024 characters long',
  headerName:
    "spec.healthCheck.http.headers names must be HTTP header names of at most 256 letters, digits and !#$%&'*+-.^_`|~ (no spaces or ':'), e.g. X-Probe",
  headerValue: 'spec.healthCheck.http.headers values must not contain line breaks (CR or LF)',
  headerValueLength: 'spec.healthCheck.http.headers values must be at most 1024 characters long',
  expectedStatus:
    'each spec.healthCheck.http.expectedStatuses item must be a status code from 100 to 599 (204 or "204") or an ascending range within 100-599 such as "200-399"',
  expectedJSONKey:
    'spec.healthCheck.http.expectedJSON keys must be dotted JSON paths of at most 256 characters with no empty step, e.g. deps.redis',
  expectedJSONValue: 'spec.healthCheck.http.expectedJSON values must be at most 1024 characters long',
  grpcService: 'spec.healthCheck.grpc.service must be at most 256 characters long',
} as const;

// The same expressions as the CRDs' patterns and CEL rules; JavaScript and RE2 agree on this subset.
const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const LABEL_KEY = /^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;
const TAG_KEY = /^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;
const PORT_NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const HTTP_URL = /^https?:\/\/([A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?\/?$/;
const NAMESPACE_TEMPLATE = /^([a-z0-9-]|[{]namespace[}])+$/;
const CONSUL_NAMESPACE_TEMPLATE = /^([a-z0-9-]|[{]namespace[}])*$/;
const SERVICE_NAME_TEMPLATE = /^([a-z0-9-]|[{]service[}]|[{]namespace[}])+$/;
const PREFIX_DOT_SEGMENT = /(^|\/)[.][.]?(\/|$)/;
const PREFIX_CHARS = /^[-A-Za-z0-9_./]*$/;
const DATACENTER = /^[A-Za-z0-9_-]*$/;
const ZOOKEEPER_SERVERS =
  /^[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?:[0-9]{1,5}(,[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?:[0-9]{1,5})*(\/[-A-Za-z0-9_][-A-Za-z0-9_.]*)*$/;
const ZOOKEEPER_BASE_PATH = /^(\/[-A-Za-z0-9_][-A-Za-z0-9_.]*)+$/;
const ZOOKEEPER_RESERVED = /^\/zookeeper(\/|$)/;
// The CRD's ^/\S*$ as RE2 reads it: its \S is anything but [\t\n\f\r ], where JavaScript's also refuses \v and Unicode spaces.
const HTTP_PATH = /^\/[^\t\n\f\r ]*$/;
const HEADER_NAME = /^[-!#$%&'*+.^_`|~0-9A-Za-z]+$/;
const JSON_PATH = /^[^.]+([.][^.]+)*$/;
const STATUS_CODE_OR_RANGE = /^[1-5][0-9][0-9](-[1-5][0-9][0-9])?$/;

function problem(path: string, message: string): string {
  return `${path}: ${message}`;
}

/** The CRD's maxItems/maxProperties: the apiserver's CEL cost budget depends on them. */
function checkCount(count: number, max: number, path: string): string[] {
  return count > max ? [problem(path, `must have at most ${max} entries, has ${count}`)] : [];
}

function checkDuplicates(values: readonly string[], path: string, message: string): string[] {
  const problems: string[] = [];
  const seen = new Set<string>();
  values.forEach((v, i) => {
    if (seen.has(v)) problems.push(problem(`${path}[${i}]`, message));
    seen.add(v);
  });
  return problems;
}

function isIntegerIn(value: unknown, min: number, max: number): boolean {
  return typeof value === 'number' && Number.isInteger(value) && value >= min && value <= max;
}

/** Whether `address` is what the CRD's CEL `isIP` accepts: an IP literal without a zone. */
function isIpLiteral(address: string): boolean {
  return isIP(address) !== 0 && !address.includes('%');
}

/** Whether `port` is a valid spec.port: a port number, or an IANA service name as containers use. */
function isValidPort(port: number | string): boolean {
  if (typeof port === 'number') return isIntegerIn(port, 1, 65535);
  return port.length <= 15 && PORT_NAME.test(port) && /[a-z]/.test(port) && !port.includes('--');
}

/** Problems of a string map: its maxProperties (`maxEntries`), then each key and value. */
function checkStringMap(
  map: Readonly<Record<string, string>> | undefined,
  path: string,
  maxEntries: number,
  keyOk: (key: string) => boolean,
  keyMessage: string,
  valueOk: (value: string) => boolean,
  valueMessage: string,
): string[] {
  const entries = Object.entries(map ?? {});
  const problems = checkCount(entries.length, maxEntries, path);
  for (const [key, value] of entries) {
    const at = `${path}[${JSON.stringify(key)}]`;
    if (!keyOk(key)) problems.push(problem(at, keyMessage));
    if (typeof value !== 'string' || !valueOk(value)) problems.push(problem(at, valueMessage));
  }
  return problems;
}

function checkTags(tags: Readonly<Record<string, string>> | undefined, path: string): string[] {
  const m = VALIDATION_MESSAGES;
  return checkStringMap(
    tags,
    path,
    64,
    (k) => k.length <= 63 && TAG_KEY.test(k),
    m.tagKey,
    (v) => v.length <= 256,
    m.tagValue,
  );
}

/**
 * Problems of a label selector, for spec.selector (where `requireTerms` refuses the empty selector)
 * and spec.namespaceSelector (where the empty selector admits every namespace).
 */
function checkLabelSelector(selector: LabelSelector, path: string, requireTerms: boolean): string[] {
  const m = VALIDATION_MESSAGES;
  const problems = checkStringMap(
    selector.matchLabels,
    `${path}.matchLabels`,
    64,
    (k) => k.length <= 317 && LABEL_KEY.test(k),
    m.labelKey,
    (v) => v.length <= 63 && LABEL_VALUE.test(v),
    m.labelValue,
  );
  const expressions = selector.matchExpressions ?? [];
  problems.push(...checkCount(expressions.length, 16, `${path}.matchExpressions`));
  expressions.forEach((req, i) => {
    const at = `${path}.matchExpressions[${i}]`;
    if (!LABEL_KEY.test(req.key)) problems.push(problem(`${at}.key`, m.labelKey));
    if (!(LABEL_SELECTOR_OPERATORS as readonly string[]).includes(req.operator))
      problems.push(problem(`${at}.operator`, m.selectorOperator));
    problems.push(...checkCount(req.values?.length ?? 0, 64, `${at}.values`));
    const hasValues = (req.values?.length ?? 0) > 0;
    if ((req.operator === 'In' || req.operator === 'NotIn') !== hasValues) problems.push(problem(at, m.selectorValues));
    req.values?.forEach((v, j) => {
      if (!LABEL_VALUE.test(v) || v.length > 63) problems.push(problem(`${at}.values[${j}]`, m.labelValue));
    });
  });
  if (requireTerms && Object.keys(selector.matchLabels ?? {}).length === 0 && expressions.length === 0) {
    problems.push(problem(path, m.emptySelector));
  }
  return problems;
}

function checkSecretRef(ref: SecretReference | undefined, path: string): string[] {
  if (ref === undefined) return [];
  const ok = DNS1123_SUBDOMAIN.test(ref.name) && ref.name.length <= 253 && DNS1123_LABEL.test(ref.namespace) && ref.namespace.length <= 63;
  return ok ? [] : [problem(path, VALIDATION_MESSAGES.secretRef)];
}

/** Whether `status` is what the CRD's expectedStatuses rule accepts: a code from 100 to 599, or an ascending range like "200-399". */
function isExpectedStatus(status: number | string): boolean {
  if (typeof status === 'number') return isIntegerIn(status, 100, 599);
  return STATUS_CODE_OR_RANGE.test(status) && (status.length === 3 || Number(status.slice(0, 3)) <= Number(status.slice(4)));
}

/** Problems of spec.healthCheck.http, with its scheme defaulted. */
function checkHttpHealthCheck(http: HttpHealthCheck): string[] {
  const m = VALIDATION_MESSAGES;
  const at = 'spec.healthCheck.http';
  const problems: string[] = [];
  if (!HTTP_PATH.test(http.path)) problems.push(problem(`${at}.path`, m.httpPath));
  if (http.path.length > 1024) problems.push(problem(`${at}.path`, m.httpPathLength));
  if (http.port !== undefined && !isIntegerIn(http.port, 1, 65535)) problems.push(problem(`${at}.port`, m.endpointPort));
  if (!(HTTP_HEALTH_CHECK_SCHEMES as readonly string[]).includes(http.scheme)) problems.push(problem(`${at}.scheme`, m.httpScheme));
  if (http.insecureSkipVerify === true && http.scheme !== 'https') problems.push(problem(at, m.insecureSkipVerify));
  problems.push(
    ...checkStringMap(
      http.headers,
      `${at}.headers`,
      16,
      (k) => k.length <= 256 && HEADER_NAME.test(k),
      m.headerName,
      (v) => !v.includes('\r') && !v.includes('\n'),
      m.headerValue,
    ),
  );
  for (const [name, value] of Object.entries(http.headers ?? {})) {
    if (value.length > 1024) problems.push(problem(`${at}.headers[${JSON.stringify(name)}]`, m.headerValueLength));
  }
  const statuses = http.expectedStatuses ?? [];
  problems.push(...checkCount(statuses.length, 16, `${at}.expectedStatuses`));
  statuses.forEach((status, i) => {
    if (!isExpectedStatus(status)) problems.push(problem(`${at}.expectedStatuses[${i}]`, m.expectedStatus));
  });
  problems.push(
    ...checkStringMap(
      http.expectedJSON,
      `${at}.expectedJSON`,
      32,
      (k) => k.length <= 256 && JSON_PATH.test(k),
      m.expectedJSONKey,
      (v) => v.length <= 1024,
      m.expectedJSONValue,
    ),
  );
  return problems;
}

/**
 * Problems of spec.healthCheck once the CRD's defaults are filled in, as the apiserver fills them
 * in before the CEL rules run: a timeoutSeconds of 11 without an intervalSeconds is over the default 10.
 */
function checkHealthCheck(check: HealthCheck): string[] {
  const m = VALIDATION_MESSAGES;
  const at = 'spec.healthCheck';
  const problems: string[] = [];
  const kinds = [check.http, check.tcp, check.grpc].filter((kind) => kind !== undefined).length;
  if (kinds !== 1) problems.push(problem(at, m.healthCheckKind));
  if (check.timeoutSeconds > check.intervalSeconds) problems.push(problem(at, m.healthCheckTimeout));
  if (!isIntegerIn(check.intervalSeconds, 1, 3600)) problems.push(problem(`${at}.intervalSeconds`, m.healthCheckInterval));
  if (!isIntegerIn(check.timeoutSeconds, 1, 3600)) problems.push(problem(`${at}.timeoutSeconds`, m.healthCheckTimeoutRange));
  if (!isIntegerIn(check.failureThreshold, 1, 100)) problems.push(problem(`${at}.failureThreshold`, m.failureThreshold));
  if (!isIntegerIn(check.successThreshold, 1, 100)) problems.push(problem(`${at}.successThreshold`, m.successThreshold));
  if (!isIntegerIn(check.panicThresholdPercent, 0, 100)) problems.push(problem(`${at}.panicThresholdPercent`, m.panicThreshold));
  if (check.http !== undefined) problems.push(...checkHttpHealthCheck(check.http));
  const { tcp, grpc } = check;
  if (tcp?.port !== undefined && !isIntegerIn(tcp.port, 1, 65535)) problems.push(problem(`${at}.tcp.port`, m.endpointPort));
  if (grpc?.port !== undefined && !isIntegerIn(grpc.port, 1, 65535)) problems.push(problem(`${at}.grpc.port`, m.endpointPort));
  if (grpc !== undefined && grpc.service.length > 256) problems.push(problem(`${at}.grpc.service`, m.grpcService));
  return problems;
}

/**
 * Checks a ServiceInstance spec as the CRD would, plus that no static endpoint is listed twice.
 *
 * @returns one human-readable problem per line, each starting with the field path; empty when the spec is usable.
 */
export function validateServiceInstanceSpec(spec: ServiceInstanceSpec): string[] {
  const m = VALIDATION_MESSAGES;
  const problems: string[] = [];
  if (spec.service.length > 63 || !DNS1123_LABEL.test(spec.service)) problems.push(problem('spec.service', m.serviceName));
  const registries = spec.registries ?? [];
  problems.push(...checkCount(registries.length, 16, 'spec.registries'));
  registries.forEach((name, i) => {
    if (name.length > 253 || !DNS1123_SUBDOMAIN.test(name)) problems.push(problem(`spec.registries[${i}]`, m.registryName));
  });
  problems.push(...checkDuplicates(registries, 'spec.registries', m.duplicateRegistry));

  const hasSelector = spec.selector !== undefined;
  const hasEndpoints = spec.endpoints !== undefined;
  if (hasSelector === hasEndpoints) problems.push(problem('spec', m.exactlyOneSource));
  if (hasSelector && spec.port === undefined) problems.push(problem('spec', m.selectorNeedsPort));
  if (spec.port !== undefined && !isValidPort(spec.port)) problems.push(problem('spec.port', m.port));
  if (spec.selector !== undefined) problems.push(...checkLabelSelector(spec.selector, 'spec.selector', true));

  problems.push(...checkCount(spec.endpoints?.length ?? 0, 1000, 'spec.endpoints'));
  const defaultPort = typeof spec.port === 'number' ? spec.port : undefined;
  const seen = new Set<string>();
  let missingPort = false;
  spec.endpoints?.forEach((endpoint, i) => {
    const at = `spec.endpoints[${i}]`;
    const { address } = endpoint;
    if (address.length > 253 || !(isIpLiteral(address) || DNS1123_SUBDOMAIN.test(address)))
      problems.push(problem(`${at}.address`, m.address));
    if (endpoint.port !== undefined && !isIntegerIn(endpoint.port, 1, 65535)) problems.push(problem(`${at}.port`, m.endpointPort));
    if (endpoint.weight !== undefined && !isIntegerIn(endpoint.weight, 0, 1000)) problems.push(problem(`${at}.weight`, m.weight));
    problems.push(...checkTags(endpoint.tags, `${at}.tags`));
    const port = endpoint.port ?? defaultPort;
    if (port === undefined) {
      missingPort = true;
      return;
    }
    // Two entries with one address and port would share an instance id in every registry.
    const key = `${address}|${port}`;
    if (seen.has(key)) problems.push(problem(at, m.duplicateEndpoint));
    seen.add(key);
  });
  if (missingPort) problems.push(problem('spec', m.endpointNeedsPort));

  if (spec.healthCheck !== undefined) {
    if (!hasEndpoints) problems.push(problem('spec', m.healthCheckStaticOnly));
    problems.push(...checkHealthCheck(spec.healthCheck));
  }

  problems.push(...checkTags(spec.tags, 'spec.tags'));
  if (!isIntegerIn(spec.weight, 0, 1000)) problems.push(problem('spec.weight', m.weight));
  problems.push(
    ...checkStringMap(
      spec.metadata,
      'spec.metadata',
      64,
      (k) => k.length >= 1 && k.length <= 128,
      m.metadataKey,
      (v) => v.length <= 512,
      m.metadataValue,
    ),
  );
  return problems;
}

function checkEtcdPrefix(prefix: string): string[] {
  const m = VALIDATION_MESSAGES;
  const problems: string[] = [];
  if (prefix.endsWith('/')) problems.push(m.prefixEnd);
  if (prefix.includes('//')) problems.push(m.prefixEmptySegment);
  if (PREFIX_DOT_SEGMENT.test(prefix)) problems.push(m.prefixDotSegment);
  if (!PREFIX_CHARS.test(prefix)) problems.push(m.prefixChars);
  return problems.map((message) => problem('spec.etcd.prefix', message));
}

/**
 * Checks a Registry spec as the CRD would: the type matches the block that is set, and templates,
 * URLs and the etcd prefix cannot escape their place in the registry.
 *
 * @returns one human-readable problem per line, each starting with the field path; empty when the spec is usable.
 */
export function validateRegistrySpec(spec: RegistrySpec): string[] {
  const m = VALIDATION_MESSAGES;
  const problems: string[] = [];
  if (!(REGISTRY_TYPES as readonly string[]).includes(spec.type)) problems.push(problem('spec.type', m.registryType));
  if (spec.type === 'etcd' && spec.etcd === undefined) problems.push(problem('spec', m.etcdRequired));
  if (spec.type !== 'etcd' && spec.etcd !== undefined) problems.push(problem('spec', m.etcdForbidden));
  if (spec.type === 'consul' && spec.consul === undefined) problems.push(problem('spec', m.consulRequired));
  if (spec.type !== 'consul' && spec.consul !== undefined) problems.push(problem('spec', m.consulForbidden));
  if (spec.type === 'zookeeper' && spec.zookeeper === undefined) problems.push(problem('spec', m.zookeeperRequired));
  if (spec.type !== 'zookeeper' && spec.zookeeper !== undefined) problems.push(problem('spec', m.zookeeperForbidden));

  problems.push(...checkLabelSelector(spec.namespaceSelector, 'spec.namespaceSelector', false));
  if (spec.namespace.length > 128 || !NAMESPACE_TEMPLATE.test(spec.namespace))
    problems.push(problem('spec.namespace', m.namespaceTemplate));
  if (!isIntegerIn(spec.leaseTTLSeconds, 5, 3600)) problems.push(problem('spec.leaseTTLSeconds', m.leaseTTL));
  if (!(REGISTRY_POLICIES as readonly string[]).includes(spec.policy)) problems.push(problem('spec.policy', m.policy));

  const { etcd, consul, zookeeper } = spec;
  if (etcd !== undefined) {
    if (etcd.endpoints.length === 0) problems.push(problem('spec.etcd.endpoints', m.etcdEndpoints));
    problems.push(...checkCount(etcd.endpoints.length, 16, 'spec.etcd.endpoints'));
    problems.push(...checkDuplicates(etcd.endpoints, 'spec.etcd.endpoints', m.duplicateEtcdEndpoint));
    etcd.endpoints.forEach((url, i) => {
      if (url.length > 512 || !HTTP_URL.test(url)) problems.push(problem(`spec.etcd.endpoints[${i}]`, m.etcdEndpoint));
    });
    problems.push(...checkEtcdPrefix(etcd.prefix));
    if (!(ETCD_VALUE_FORMATS as readonly string[]).includes(etcd.format)) problems.push(problem('spec.etcd.format', m.format));
    problems.push(...checkSecretRef(etcd.credentialsSecretRef, 'spec.etcd.credentialsSecretRef'));
  }
  if (consul !== undefined) {
    if (consul.address.length > 512 || !HTTP_URL.test(consul.address)) problems.push(problem('spec.consul.address', m.consulAddress));
    if (consul.datacenter !== undefined && (consul.datacenter.length > 64 || !DATACENTER.test(consul.datacenter))) {
      problems.push(problem('spec.consul.datacenter', m.consulDatacenter));
    }
    if (consul.namespace.length > 128 || !CONSUL_NAMESPACE_TEMPLATE.test(consul.namespace))
      problems.push(problem('spec.consul.namespace', m.consulNamespace));
    if (consul.serviceName.length > 128 || !SERVICE_NAME_TEMPLATE.test(consul.serviceName))
      problems.push(problem('spec.consul.serviceName', m.serviceNameChars));
    if (!consul.serviceName.includes(SERVICE_PLACEHOLDER)) problems.push(problem('spec.consul.serviceName', m.serviceNameNeedsService));
    problems.push(...checkSecretRef(consul.tokenSecretRef, 'spec.consul.tokenSecretRef'));
  }
  if (zookeeper !== undefined) {
    if (zookeeper.servers.length > 1024 || !ZOOKEEPER_SERVERS.test(zookeeper.servers))
      problems.push(problem('spec.zookeeper.servers', m.zookeeperServers));
    if (zookeeper.basePath.length < 2 || zookeeper.basePath.length > 256 || !ZOOKEEPER_BASE_PATH.test(zookeeper.basePath))
      problems.push(problem('spec.zookeeper.basePath', m.zookeeperBasePath));
    if (ZOOKEEPER_RESERVED.test(zookeeper.basePath)) problems.push(problem('spec.zookeeper.basePath', m.zookeeperReserved));
    if (!(ZOOKEEPER_VALUE_FORMATS as readonly string[]).includes(zookeeper.format))
      problems.push(problem('spec.zookeeper.format', m.zookeeperFormat));
    if (zookeeper.sessionTimeoutSeconds !== undefined && !isIntegerIn(zookeeper.sessionTimeoutSeconds, 2, 600))
      problems.push(problem('spec.zookeeper.sessionTimeoutSeconds', m.zookeeperSessionTimeout));
    problems.push(...checkSecretRef(zookeeper.credentialsSecretRef, 'spec.zookeeper.credentialsSecretRef'));
  }
  return problems;
}
