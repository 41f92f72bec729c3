/**
 * Consul names as the operator's Registry renders them: the service name from the `serviceName`
 * template over `{service}` and `{namespace}` (default `{service}`; `{namespace}-{service}` keeps
 * registry namespaces apart on open-source Consul), the Consul Enterprise namespace from a
 * template over `{namespace}`, and the server-side filter that pins every read to one registry
 * namespace and service.
 */
import { DiscoveryConfigError } from '../errors.ts';
import { META } from './meta.ts';

/** The operator's default `spec.consul.serviceName`. */
export const DEFAULT_SERVICE_NAME_TEMPLATE = '{service}';

const PLACEHOLDER = /\{([^{}]*)\}/g;
const FORBIDDEN = /[\s\p{Cc}/]/u;

/**
 * Renders `template` with `values`. Refuses placeholders other than the keys of `values`, unpaired
 * braces, and results that cannot be a Consul name (empty unless `allowEmpty`, '/', white space).
 */
export function renderTemplate(option: string, template: string, values: Readonly<Record<string, string>>, allowEmpty = false): string {
  const allowed = Object.keys(values)
    .map((k) => `{${k}}`)
    .join(', ');
  const fail = (problem: string): never => {
    throw new DiscoveryConfigError(
      `${option} ${JSON.stringify(template)} ${problem}: use the same template as the Registry's spec.consul (placeholders ${allowed})`,
    );
  };
  const rendered = template.replace(PLACEHOLDER, (_whole, name: string) => values[name] ?? fail(`uses unknown placeholder {${name}}`));
  if (/[{}]/.test(template.replace(PLACEHOLDER, ''))) fail('has an unmatched "{" or "}"');
  if (rendered === '' && !allowEmpty) fail('renders to an empty name');
  if (FORBIDDEN.test(rendered)) fail(`renders to ${JSON.stringify(rendered)}, which contains '/', white space or a control character`);
  return rendered;
}

/** The Consul service name of `service` in registry namespace `namespace`. */
export function consulServiceName(template: string, namespace: string, service: string): string {
  return renderTemplate('serviceName', template, { service, namespace });
}

/** The Consul Enterprise namespace of a registry namespace; '' (no template) means none is sent. */
export function consulNamespaceOf(template: string | undefined, namespace: string): string {
  if (template === undefined || template === '') return '';
  return renderTemplate('consulNamespace', template, { namespace }, true);
}

/** A bexpr string literal (bexpr takes JSON's escapes). */
export function literal(value: string): string {
  return JSON.stringify(value);
}

/**
 * The filter of every health read: only services the operator (or a registrar) wrote for this
 * registry namespace and service. Meta keys with '-' need the index form; `Service.Meta.kr-service`
 * does not parse (checked against Consul 1.14). The service is pinned too, because two templates'
 * outputs may coincide (`{namespace}-{service}` renders `a-b`+`c` and `a`+`b-c` alike).
 */
export function registryFilter(namespace: string, service: string): string {
  return [
    `Service.Meta[${literal(META.registryNamespace)}] == ${literal(namespace)}`,
    `Service.Meta[${literal(META.service)}] == ${literal(service)}`,
  ].join(' and ');
}
