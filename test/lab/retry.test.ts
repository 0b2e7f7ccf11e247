/**
 * The lab's one retry (lab/retry.ts): a step runs a second time only after a guest fault, and a
 * step written as the rule says (measure from the start of its own attempt, or assert a state the
 * recovery restores) passes on its second run although state accumulated across both attempts.
 */
import { expect } from 'chai';
import { stalledVcpu } from '../../lab/guest.js';
import { type Faulting, retryAfterGuestFault } from '../../lab/retry.js';

/** A guest that faults when told to, and a bridge-like event log that keeps growing. */
class Lab implements Faulting {
  readonly name = 'g';
  faults = 0;
  lastFault = '';
  recoveries = 0;
  /** What a bridge says over time: every boot of the guest attaches both rings again. */
  readonly events: { kind: string; ring?: number }[] = [];
  /** The rings the bridge serves now. */
  attached = new Set<number>();

  boot(): void {
    for (const ring of [0, 1]) {
      this.events.push({ kind: 'ring-running', ring });
      this.attached.add(ring);
    }
  }

  fault(what: string): never {
    this.faults++;
    this.lastFault = what;
    this.attached.clear();
    this.events.push({ kind: 'ring-stopped' });
    throw new Error(`the guest kernel panicked while running a command (${what})`);
  }

  async recover(): Promise<void> {
    this.recoveries++;
    this.boot();
  }

  mark(): number {
    return this.events.length;
  }
}

describe('lab retry after a guest fault', function () {
  it('runs a step once when it passes', async function () {
    const lab = new Lab();
    const attempts: number[] = [];
    const r = await retryAfterGuestFault(lab, async (n) => {
      attempts.push(n);
      return 42;
    });
    expect(r).to.equal(42);
    expect(attempts).to.deep.equal([1]);
  });

  it('does not retry a failure without a guest fault (a bridge fault is never hidden)', async function () {
    const lab = new Lab();
    const attempts: number[] = [];
    let err: Error | undefined;
    await retryAfterGuestFault(lab, async (n) => {
      attempts.push(n);
      throw new Error('rings not attached');
    }).catch((e: Error) => {
      err = e;
    });
    expect(err?.message).to.equal('rings not attached');
    expect(attempts).to.deep.equal([1]);
    expect(lab.recoveries).to.equal(0);
  });

  it('retries once after a fault, recovers the guest first, and reports the fault', async function () {
    const lab = new Lab();
    const told: string[] = [];
    const attempts: number[] = [];
    await retryAfterGuestFault(
      lab,
      async (n) => {
        attempts.push(n);
        if (n === 1) lab.fault('traps: PANIC: double fault');
      },
      { onRetry: (f) => told.push(f) },
    );
    expect(attempts).to.deep.equal([1, 2]);
    expect(lab.recoveries).to.equal(1);
    expect(told).to.deep.equal(['g: traps: PANIC: double fault']);
  });

  it('a second fault fails the step (one retry only)', async function () {
    const lab = new Lab();
    let err: Error | undefined;
    await retryAfterGuestFault(lab, async () => lab.fault('reset')).catch((e: Error) => {
      err = e;
    });
    expect(err?.message).to.match(/panicked/);
    expect(lab.recoveries).to.equal(1);
  });

  it('only recovers the guests that faulted', async function () {
    const a = new Lab();
    const b = Object.assign(new Lab(), { name: 'h' });
    await retryAfterGuestFault([a, b], async (n) => {
      if (n === 1) b.fault('stall');
    });
    expect([a.recoveries, b.recoveries]).to.deep.equal([0, 1]);
  });

  describe('a step that asserts accumulated state, run twice', function () {
    /**
     * The body of "carries traffic on both queue pairs": the first attempt's guest faults after the
     * rings were attached, the recovery boots it again (attaching them again), then the step runs
     * once more. State accumulated over both attempts: 2 boots' worth of ring-running events.
     */
    function scenario(step: (lab: Lab, from: number) => void): Promise<void> {
      const lab = new Lab();
      lab.boot();
      return retryAfterGuestFault(lab, async (n) => {
        const from = lab.mark();
        if (n === 1) lab.fault('traps: PANIC: double fault, error_code: 0x0');
        lab.events.push({ kind: 'traffic' });
        step(lab, from);
      });
    }

    it('passes when it asserts the state now (rings attached) and counts from its own start', async function () {
      await scenario((lab, from) => {
        expect([...lab.attached].sort(), 'rings attached now').to.deep.equal([0, 1]);
        expect(
          lab.events.slice(from).filter((e) => e.kind === 'ring-stopped'),
          'no ring stopped in this attempt',
        ).to.deep.equal([]);
      });
    });

    it('would fail if it counted from the start of the process (what the rule prevents)', async function () {
      let err: Error | undefined;
      await scenario((lab) => {
        expect(
          lab.events.filter((e) => e.kind === 'ring-running'),
          'all rings attached',
        ).to.have.length(2);
      }).catch((e: Error) => {
        err = e;
      });
      expect(err?.message).to.match(/expected .* to have a length of 2 but got 4/);
    });
  });
});

describe('lab guest: a stall before VBGUEST-READY is told from a guest blocked on its back-end', () => {
  it('a vCPU busy for half the second and no ping reply is the lab stall; a blocked vCPU or a reply is not', () => {
    const diag = (cpu: string, replies: number): string =>
      `diagnosis: CPU ticks of QEMU 305's threads in 1 s: ${cpu}; ping 10.0.40.2 from L2: ${replies} of 2 replies`;
    expect(stalledVcpu(diag('CPU 0/KVM +97', 0))).to.equal(true);
    expect(stalledVcpu(diag('CPU 0/KVM +0, CPU 1/KVM +64', 0))).to.equal(true);
    expect(stalledVcpu(diag('CPU 0/KVM +3', 0)), 'blocked in QEMU: the back-end never answered').to.equal(false);
    expect(stalledVcpu(diag('CPU 0/KVM +97', 2)), 'its kernel answers').to.equal(false);
    expect(stalledVcpu('diagnosis: QEMU exited with status 1'), 'QEMU gone').to.equal(false);
  });
});
