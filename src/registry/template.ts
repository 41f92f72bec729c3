/**
 * Registry-side name templates: the Registry's `namespace` ("{namespace}", "env-{namespace}") and
 * Consul's `serviceName` ("{service}", "{namespace}-{service}").
 *
 * Rendered names become etcd key segments and Consul names, so anything that could escape its
 * segment or confuse a consumer is refused here, with a message aimed at whoever wrote the Registry.
 */

/** Values a template may refer to, by placeholder name. */
export type TemplateValues = Readonly<Record<string, string>>;

/** Longest rendered name accepted: the DNS subdomain limit, which Consul and etcd users expect. */
export const MAX_RENDERED_LENGTH = 253;

/** A template that cannot be rendered, or renders to an unusable name; the message is user-facing. */
export class TemplateError extends Error {
  override readonly name = 'TemplateError';
  /** The Registry field the template came from, e.g. `spec.namespace`. */
  readonly field: string;
  readonly template: string;

  constructor(field: string, template: string, message: string) {
    super(message);
    this.field = field;
    this.template = template;
  }
}

/** Options of {@link renderTemplate}. */
export interface RenderOptions {
  /** Registry field the template comes from, named in error messages, e.g. `spec.namespace`. */
  readonly field: string;
  /** Placeholders the field supports; any other `{name}` is an error. */
  readonly allowed: readonly string[];
  /** Accept an empty result (Consul's namespace "" means the default namespace). */
  readonly allowEmpty?: boolean;
}

const PLACEHOLDER = /\{([^{}]*)\}/g;
// \p{Cc} covers C0/C1 controls, \s covers ASCII and Unicode white space.
const FORBIDDEN_CHARS = /[\s\p{Cc}]/u;

function describeChar(ch: string): string {
  const code = ch.codePointAt(0) ?? 0;
  return `U+${code.toString(16).toUpperCase().padStart(4, '0')}`;
}

function placeholderList(allowed: readonly string[]): string {
  return allowed.map((name) => `{${name}}`).join(', ');
}

/**
 * Checks a template's syntax without rendering it: every `{...}` must name an allowed placeholder
 * and braces must pair up. Use it at admission/config time so a bad Registry fails early.
 *
 * @throws {TemplateError} describing the first problem found.
 */
export function validateTemplate(template: string, options: RenderOptions): void {
  const { field, allowed } = options;
  for (const match of template.matchAll(PLACEHOLDER)) {
    const name = match[1] ?? '';
    if (!allowed.includes(name)) {
      throw new TemplateError(
        field,
        template,
        `${field} template "${template}" uses unknown placeholder "{${name}}"; ` +
          `the placeholders available here are ${placeholderList(allowed)}: fix the template.`,
      );
    }
  }
  if (/[{}]/.test(template.replace(PLACEHOLDER, ''))) {
    throw new TemplateError(
      field,
      template,
      `${field} template "${template}" has an unmatched "{" or "}"; ` +
        `write placeholders as ${placeholderList(allowed)} and use no other braces.`,
    );
  }
}

/**
 * Renders `template` with `values` and checks that the result is usable as a single registry name
 * segment: not empty (unless allowed), no '/', no '..', no white space or control characters, not
 * '.', and at most {@link MAX_RENDERED_LENGTH} characters.
 *
 * @throws {TemplateError} with a message that says what was wrong and how to fix it.
 */
export function renderTemplate(template: string, values: TemplateValues, options: RenderOptions): string {
  validateTemplate(template, options);
  const { field } = options;
  const rendered = template.replace(PLACEHOLDER, (_whole, name: string) => {
    const value = values[name];
    if (value === undefined) {
      // A programming error rather than a user one, but still worth a clear message.
      throw new TemplateError(field, template, `${field} template "${template}": no value was supplied for "{${name}}".`);
    }
    return value;
  });
  const fail = (problem: string, advice: string): never => {
    const context = Object.entries(values)
      .map(([k, v]) => `${k}=${JSON.stringify(v)}`)
      .join(', ');
    throw new TemplateError(
      field,
      template,
      `${field} template "${template}" renders to ${JSON.stringify(rendered)} (${context}), which ${problem}; ${advice}`,
    );
  };

  if (rendered === '') {
    if (options.allowEmpty === true) return rendered;
    fail('is empty', 'put literal text or a placeholder in the template.');
  }
  if (rendered.includes('/')) fail("contains '/'", "names are single path segments: remove '/' from the template.");
  if (rendered.includes('..')) fail("contains '..'", "remove '..' from the template.");
  if (rendered === '.') fail("is '.'", 'use a name with at least one other character.');
  const bad = FORBIDDEN_CHARS.exec(rendered);
  if (bad !== null) {
    fail(`contains white space or a control character (${describeChar(bad[0])})`, 'remove it from the template.');
  }
  if (rendered.length > MAX_RENDERED_LENGTH) {
    fail(`is ${rendered.length} characters long`, `shorten the template so names stay within ${MAX_RENDERED_LENGTH} characters.`);
  }
  return rendered;
}

/** Placeholders of the Registry `namespace` template. */
export const NAMESPACE_TEMPLATE_PLACEHOLDERS: readonly string[] = ['namespace'];

/** Placeholders of the Consul `serviceName` template. */
export const SERVICE_NAME_TEMPLATE_PLACEHOLDERS: readonly string[] = ['namespace', 'service'];

/**
 * Renders a Registry's `spec.namespace` template for a Kubernetes namespace, e.g. "env-{namespace}"
 * with "prod" gives "env-prod".
 *
 * @throws {TemplateError} when the template or its result is unusable.
 */
export function renderRegistryNamespace(template: string, k8sNamespace: string): string {
  const key = `${template}\u0000${k8sNamespace}`;
  const known = renderedNamespaces.get(key);
  if (known !== undefined) return known;
  const rendered = renderTemplate(
    template,
    { namespace: k8sNamespace },
    { field: 'spec.namespace', allowed: NAMESPACE_TEMPLATE_PLACEHOLDERS },
  );
  if (renderedNamespaces.size >= RENDERED_NAMESPACES_MAX) renderedNamespaces.clear();
  renderedNamespaces.set(key, rendered);
  return rendered;
}

/**
 * Registry namespaces rendered before, by template and Kubernetes namespace: every reconcile
 * renders one, and there are only as many as templates times namespaces. Failures are not kept.
 */
const renderedNamespaces = new Map<string, string>();
/** Bound of {@link renderedNamespaces}: past it, it starts over. */
const RENDERED_NAMESPACES_MAX = 4096;

/**
 * Renders a Registry's `spec.consul.serviceName` template, e.g. "{namespace}-{service}" with
 * namespace "prod" and service "user" gives "prod-user".
 *
 * @throws {TemplateError} when the template or its result is unusable.
 */
export function renderConsulServiceName(template: string, values: { readonly namespace: string; readonly service: string }): string {
  return renderTemplate(
    template,
    { namespace: values.namespace, service: values.service },
    { field: 'spec.consul.serviceName', allowed: SERVICE_NAME_TEMPLATE_PLACEHOLDERS },
  );
}
