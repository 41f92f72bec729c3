/** What one protocol's probe says, before probe() adds the duration. */
export interface ProbeVerdict {
  readonly healthy: boolean;
  /** Why, in words a user can act on: `status 503, want 200-399`, `deps.redis is "timeout", want "ok"`. */
  readonly message: string;
}
