/**
 * One kind of fault the soak injects (docs/soak.md's table): `run` does it to the world and says what
 * it hit; the checks after it (lab/soak/check.ts) are the same for every kind. How often each kind is
 * picked is `WEIGHTS` in lab/soak/soak.ts, one table, so that the pace is read in one place.
 */
import type { EventKind } from '../soak.js';
import type { Outcome, SoakWorld } from '../world.js';

export interface FaultKind {
  name: EventKind;
  run(w: SoakWorld): Promise<Outcome>;
}
