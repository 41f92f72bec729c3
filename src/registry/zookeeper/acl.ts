/**
 * ACLs and digest credentials. ZooKeeper's digest scheme identifies a client by `user:password`
 * (sent with addAuthInfo) and matches it against ACL ids of the form `user:base64(sha1(user:password))`;
 * the server computes the same digest, the client library does not, so it is done here.
 */
import { createHash } from 'node:crypto';
import zookeeper from 'node-zookeeper-client';
import { ZooKeeperError } from './errors.ts';

/** ZooKeeper's permission bits. */
export const ZooKeeperPermission = {
  READ: 1,
  WRITE: 2,
  CREATE: 4,
  DELETE: 8,
  ADMIN: 16,
  ALL: 31,
} as const;

/** One ACL entry: who (`scheme` + `id`) may do what (`perms`, a sum of {@link ZooKeeperPermission}). */
export interface ZooKeeperAcl {
  readonly perms: number;
  readonly scheme: string;
  readonly id: string;
}

/** Anyone may do anything: ZooKeeper's OPEN_ACL_UNSAFE. */
export const OPEN_ACL: readonly ZooKeeperAcl[] = [{ perms: ZooKeeperPermission.ALL, scheme: 'world', id: 'anyone' }];

/** Splits digest credentials `user:password` (at the first colon, as the server does); throws when malformed. */
export function parseDigestCredentials(credentials: string): { readonly user: string; readonly password: string } {
  const colon = credentials.indexOf(':');
  if (colon <= 0) {
    throw new ZooKeeperError('ZooKeeper digest credentials must be "user:password" with a non-empty user; check the credentials Secret');
  }
  return { user: credentials.slice(0, colon), password: credentials.slice(colon + 1) };
}

/** The digest ACL id of `user:password`: `user:base64(sha1(user:password))`. */
export function digestId(credentials: string): string {
  const { user } = parseDigestCredentials(credentials);
  return `${user}:${createHash('sha1').update(credentials).digest('base64')}`;
}

/** An ACL entry granting `perms` (all by default) to whoever authenticated with digest `user:password`. */
export function digestAcl(credentials: string, perms: number = ZooKeeperPermission.ALL): ZooKeeperAcl {
  return { perms, scheme: 'digest', id: digestId(credentials) };
}

/** Converts ACL entries to the library's objects; an empty list is refused by the server, so it is refused here. */
export function toLibraryAcls(acls: readonly ZooKeeperAcl[]): zookeeper.ACL[] {
  if (acls.length === 0) throw new ZooKeeperError('a ZooKeeper ACL needs at least one entry; use OPEN_ACL for a world-writable node');
  return acls.map((acl) => new zookeeper.ACL(acl.perms, new zookeeper.Id(acl.scheme, acl.id)));
}

/** Converts the library's ACL objects back (they keep the bits in `permission`, whatever its typings say). */
export function fromLibraryAcls(acls: readonly zookeeper.ACL[]): ZooKeeperAcl[] {
  return acls.map((acl) => {
    const perms = (acl as unknown as { permission?: number }).permission ?? acl.perms;
    return { perms, scheme: acl.id.scheme, id: acl.id.id };
  });
}

/**
 * `acl` with every entry that grants the digest identity of `from` granting `to` instead (same
 * permissions), or undefined when no entry names `from`: the ACL of a node created under a password
 * that has since been rotated.
 */
export function rotatedAcl(acl: readonly ZooKeeperAcl[], from: string, to: string): ZooKeeperAcl[] | undefined {
  const old = digestId(from);
  if (!acl.some((a) => a.scheme === 'digest' && a.id === old)) return undefined;
  const next = digestId(to);
  const out: ZooKeeperAcl[] = [];
  for (const a of acl) {
    const entry = a.scheme === 'digest' && a.id === old ? { ...a, id: next } : a;
    if (!out.some((o) => o.scheme === entry.scheme && o.id === entry.id)) out.push(entry);
  }
  return out;
}
