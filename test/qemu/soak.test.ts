/**
 * The soak's short variant, in CI's lab suite on 6.1 (docs/soak.md, "The short variant and CI"; the full
 * one is `npm run soak -- --minutes 30`): the same seeded injector for 3 minutes on one guest of the daemon
 * plus the spare ports, and nothing may fail: no bystander loses a ping reply or a UDP line or has a TCP
 * transfer cut, no transfer arrives corrupt, every target passes traffic within 10 s, the daemon's fd count
 * is back at its level after every event, no port is left half set up, and no daemon process's RSS grows.
 * One guest: with two, L2 died twice in this file in a CI run (docs/soak.md). The seed is fresh each
 * run and printed (replay it with VB_SOAK_SEED=N). Faults of the nested lab's guests are absorbed by the
 * soak itself (the guest is booted again and the event is not charged to the bridge) and printed.
 */
import { expect } from 'chai';
import { byKind, failures, textTable } from '../../lab/soak/report.js';
import { freshSeed } from '../../lab/soak/rng.js';
import { parseKinds, runSoak } from '../../lab/soak/soak.js';
import { requireLab } from './lab.js';

const SECONDS = Number(process.env.VB_SOAK_SECONDS ?? 180);

describe('soak, short variant: faults one at a time on a daemon with a guest and spare ports', function () {
  this.timeout(SECONDS * 1000 + 300_000);
  before(function () {
    requireLab(this);
  });

  const title =
    `${SECONDS} s of seeded faults: no bystander loss (pings, UDP, TCP), no corrupt transfer, recoveries < 10 s, ` +
    'no fd or RSS growth, no half-set-up port';
  it(title, async () => {
    const seed = Number(process.env.VB_SOAK_SEED ?? freshSeed());
    const kinds = parseKinds(process.env.VB_SOAK_KINDS);
    console.log(`      seed ${seed} (replay: VB_SOAK_SEED=${seed})`);
    const r = await runSoak({
      seconds: SECONDS,
      seed,
      guests: 1,
      onePort: false,
      kinds,
      log: (l) => console.log(`      ${l}`),
    });
    console.log(textTable(byKind(r.events)).replace(/^/gm, '      '));
    const faults = r.events.filter((e) => e.guestFault);
    if (faults.length)
      console.log(`      guest faults of the lab absorbed: ${faults.map((e) => e.guestFault).join('; ')}`);
    expect(failures(r)).to.deep.equal([]);
    expect(r.events.length, 'events injected').to.be.at.least(10);
    // The traffic was there to be checked: every transfer of the run is checked once (in the event
    // after it ended), and the guest's UDP bursts arrived (a bystander's are checked whole when it is
    // one; with one guest, the target of most events, that may not come up in 3 minutes).
    expect(
      r.events.reduce((n, e) => n + e.transfers, 0),
      'TCP transfers checked',
    ).to.be.at.least(10);
    expect(r.udpLines, 'UDP lines received over the run').to.be.above(0);
    expect(new Set(r.events.map((e) => e.kind)).size, 'kinds of event').to.be.at.least(Math.min(5, kinds?.length ?? 5));
  });
});
