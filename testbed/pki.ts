/**
 * The bed's throwaway PKI, made with the openssl command: a CA, a serving certificate for
 * kube-apiserver on 127.0.0.1, an admin client certificate (group system:masters), and the
 * service-account signing key pair, as envtest sets them up.
 */
import { execFile } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

/** Files of the bed's PKI, all PEM. */
export interface Pki {
  readonly caCert: string;
  readonly caKey: string;
  readonly servingCert: string;
  readonly servingKey: string;
  readonly adminCert: string;
  readonly adminKey: string;
  readonly serviceAccountKey: string;
  readonly serviceAccountPub: string;
}

async function openssl(bin: string, args: readonly string[]): Promise<void> {
  try {
    await execFileAsync(bin, args);
  } catch (err: unknown) {
    throw new Error(`openssl ${args[0] ?? ''} failed`, { cause: err });
  }
}

async function issue(
  bin: string,
  dir: string,
  name: string,
  subject: string,
  pki: { caCert: string; caKey: string },
  ext: string,
): Promise<{ cert: string; key: string }> {
  const key = join(dir, `${name}.key`);
  const csr = join(dir, `${name}.csr`);
  const cert = join(dir, `${name}.crt`);
  const extFile = join(dir, `${name}.ext`);
  await writeFile(extFile, ext);
  await openssl(bin, ['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-subj', subject, '-out', csr]);
  await openssl(bin, [
    'x509',
    '-req',
    '-in',
    csr,
    '-CA',
    pki.caCert,
    '-CAkey',
    pki.caKey,
    '-CAcreateserial',
    '-days',
    '7',
    '-sha256',
    '-extfile',
    extFile,
    '-out',
    cert,
  ]);
  return { cert, key };
}

/** Creates the PKI in `dir`. */
export async function createPki(opensslBin: string, dir: string): Promise<Pki> {
  const caKey = join(dir, 'ca.key');
  const caCert = join(dir, 'ca.crt');
  await openssl(opensslBin, [
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-keyout',
    caKey,
    '-subj',
    '/CN=kube-registrar-testbed-ca',
    '-days',
    '7',
    '-sha256',
    '-out',
    caCert,
  ]);
  const serving = await issue(
    opensslBin,
    dir,
    'apiserver',
    '/CN=kube-apiserver',
    { caCert, caKey },
    [
      'basicConstraints=CA:FALSE',
      'keyUsage=digitalSignature,keyEncipherment',
      'extendedKeyUsage=serverAuth',
      'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc',
      '',
    ].join('\n'),
  );
  const admin = await issue(
    opensslBin,
    dir,
    'admin',
    '/O=system:masters/CN=kube-registrar-testbed-admin',
    { caCert, caKey },
    ['basicConstraints=CA:FALSE', 'keyUsage=digitalSignature,keyEncipherment', 'extendedKeyUsage=clientAuth', ''].join('\n'),
  );
  // Node makes the service-account key pair itself; only X.509 signing needs openssl.
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const serviceAccountKey = join(dir, 'sa.key');
  const serviceAccountPub = join(dir, 'sa.pub');
  await writeFile(serviceAccountKey, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
  await writeFile(serviceAccountPub, publicKey.export({ type: 'spki', format: 'pem' }));
  return {
    caCert,
    caKey,
    servingCert: serving.cert,
    servingKey: serving.key,
    adminCert: admin.cert,
    adminKey: admin.key,
    serviceAccountKey,
    serviceAccountPub,
  };
}
