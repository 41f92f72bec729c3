/**
 * The shared admission cases (test/fixtures/admission-cases.ts) on the bed's real kube-apiserver
 * with the CRDs from crds/: every valid object is admitted and every invalid one is refused with
 * the message a person should see. test/unit/crds.test.ts runs the same cases through the rules
 * model (test/support/crd-rules.ts), so the model and the CRDs cannot drift apart unnoticed.
 *
 * Every object is sent with server-side dry run (defaulting, schema and CEL run as for a real
 * write, nothing is stored, so no operator on the bed acts on it) and strict field validation (a
 * field missing from the schema fails a valid case instead of being pruned without a word).
 */
import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import { CustomObjectsApi } from '@kubernetes/client-node';
import { GROUP, REGISTRY_PLURAL, SERVICE_INSTANCE_PLURAL, VERSION } from '../../src/api/v1alpha1/types.ts';
import { ADMISSION_CASES } from '../fixtures/admission-cases.ts';
import { adminKubeConfig, uniqueSuffix } from '../support/env.ts';
import { apiserverRefusal, createNamespace, installCrds } from '../support/kube.ts';

const namespace = `admission-${uniqueSuffix()}`;
const api = adminKubeConfig().makeApiClient(CustomObjectsApi);

/** Sends `object` with server-side dry run: a ServiceInstance into the test's namespace, a Registry cluster-wide. */
function dryRunCreate(object: unknown): Promise<unknown> {
  const kind = (object as { kind?: string }).kind;
  const common = { group: GROUP, version: VERSION, body: object as object, dryRun: 'All', fieldValidation: 'Strict' };
  return kind === 'Registry'
    ? api.createClusterCustomObject({ ...common, plural: REGISTRY_PLURAL })
    : api.createNamespacedCustomObject({ ...common, plural: SERVICE_INSTANCE_PLURAL, namespace });
}

before(async () => {
  const kc = adminKubeConfig();
  await installCrds(kc);
  await createNamespace(kc, namespace);
});

describe('admission cases on the real kube-apiserver', () => {
  for (const c of ADMISSION_CASES) {
    test(c.name, async () => {
      const message = await apiserverRefusal(() => dryRunCreate(c.object));
      if (c.valid) {
        assert.equal(message, undefined, `admitted: ${message ?? ''}`);
        return;
      }
      assert.notEqual(message, undefined, 'refused');
      if (c.messageIncludes !== undefined) assert.ok(message?.includes(c.messageIncludes), `message names the problem: ${message ?? ''}`);
    });
  }
});
