/**
 * The one retry the lab allows (docs/lab.md, "Guest faults"): a step that failed is run a second
 * time only if an L3 guest faulted meanwhile (a kernel panic, a self-reset or a stall of the nested
 * lab, seen under QEMU's own tap,vhost=on as under the bridge). Any other failure is final: a retry
 * must absorb a fault of the lab, never hide a fault of the bridge.
 *
 * A retried step must be correct on its second run. Whatever it asserts about state that
 * accumulates (events, log lines, counters, fd lists, packets) is measured from the start of its
 * own attempt (BridgeProcess.mark(), counters read at the top of the step), or is a state that the
 * recovery restores (the bridge's status: rings attached now), never a total since the process began.
 */

/** What the retry needs of a guest: its fault count and a way to bring it back. */
export interface Faulting {
  readonly name: string;
  /** Faults seen so far (Guest.faults). */
  readonly faults: number;
  readonly lastFault: string;
  /** Bring the guest back after a fault (Guest.recover()). */
  recover(): Promise<void>;
}

export interface RetryOptions {
  /** Told before the second attempt, with the fault that caused it. */
  onRetry?: (fault: string) => void;
}

/**
 * Run `step(1)`; if it throws and any of `guests` faulted meanwhile, recover those guests and run
 * `step(2)`, whose result (or failure) is final.
 */
export async function retryAfterGuestFault<T>(
  guests: Faulting | readonly Faulting[],
  step: (attempt: 1 | 2) => Promise<T>,
  o: RetryOptions = {},
): Promise<T> {
  const all = Array.isArray(guests) ? guests : [guests as Faulting];
  const before = all.map((g) => g.faults);
  try {
    return await step(1);
  } catch (e) {
    const faulted = all.filter((g, i) => g.faults !== before[i]);
    if (!faulted.length) throw e;
    const fault = faulted.map((g) => `${g.name}: ${g.lastFault}`).join('; ');
    o.onRetry?.(fault);
    for (const g of faulted) await g.recover();
    return await step(2);
  }
}
