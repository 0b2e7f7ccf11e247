/**
 * The fault kinds the injector picks from, in the order the seeded generator weighs them (the order
 * is part of a seed's replay: `npm run soak -- --seed N`).
 */
import { ctlRemoveAdd } from './ctl-remove-add.js';
import { ctlReset } from './ctl-reset.js';
import { daemonKill } from './daemon-kill.js';
import { garbage } from './garbage.js';
import { guestReboot } from './guest-reboot.js';
import type { FaultKind } from './kind.js';
import { linkFlap } from './link-flap.js';
import { memtable } from './memtable.js';
import { qemuKill } from './qemu-kill.js';
import { refusedUid } from './refused-uid.js';
import { sighup } from './sighup.js';
import { vanish } from './vanish.js';

export const FAULTS: readonly FaultKind[] = [
  daemonKill,
  qemuKill,
  guestReboot,
  linkFlap,
  ctlReset,
  ctlRemoveAdd,
  garbage,
  vanish,
  memtable,
  refusedUid,
  sighup,
];
