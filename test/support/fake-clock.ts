/**
 * A clock for unit tests whose timers fire only when the test moves time forward, letting the
 * promises the code under test chained settle before and after each timer, so tests of timing
 * logic (leader election, Secret re-reads) need no real sleeps.
 */

/** Lets every promise chained so far settle. */
export function settle(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** Fits every clock interface of src/ that has now/setTimeout/clearTimeout. */
export class FakeClock {
  #now = 0;
  #timers: { at: number; fn: () => void; id: number }[] = [];
  #next = 0;

  now(): number {
    return this.#now;
  }

  setTimeout(fn: () => void, ms: number): unknown {
    const id = this.#next++;
    this.#timers.push({ at: this.#now + ms, fn, id });
    return id;
  }

  clearTimeout(handle: unknown): void {
    this.#timers = this.#timers.filter((t) => t.id !== handle);
  }

  /** Timers not yet fired. */
  get pending(): number {
    return this.#timers.length;
  }

  /** Moves time forward to `to` ms, firing due timers in order (also those they schedule) and letting promises settle. */
  async advanceTo(to: number): Promise<void> {
    for (;;) {
      await settle();
      const due = this.#timers.filter((t) => t.at <= to).sort((a, b) => a.at - b.at || a.id - b.id)[0];
      if (!due) break;
      this.#timers = this.#timers.filter((t) => t !== due);
      this.#now = Math.max(this.#now, due.at);
      due.fn();
    }
    this.#now = Math.max(this.#now, to);
    await settle();
  }

  /** Moves time forward by `ms` (see {@link advanceTo}). */
  advance(ms: number): Promise<void> {
    return this.advanceTo(this.#now + ms);
  }
}
