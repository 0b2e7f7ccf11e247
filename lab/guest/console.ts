/**
 * The serial console protocol between the harness and the guest's /init (lab/guest-initramfs/init),
 * the same under every VMM:
 *
 *   guest: VBGUEST-INIT                 userspace runs (the nested-KVM boot hang shows up as its absence)
 *   guest: VBGUEST-READY                virtio_net loaded, eth0 configured
 *   host : <id> <shell command>         one line per command
 *   guest: <output> VBGUEST-RC <id> <rc>
 */

export const INIT_MARKER = 'VBGUEST-INIT';
export const READY_MARKER = 'VBGUEST-READY';

/** Why `cmd` cannot be sent as one console line, or null. */
export function commandProblem(cmd: string): string | null {
  // The command goes to the guest's serial console as one line: a control character (a newline, ^C, ^D,
  // an escape) would be acted on by the guest's tty instead of reaching its shell.
  // biome-ignore lint/suspicious/noControlCharactersInRegex: finding control characters is the point
  if (/[\x00-\x1f\x7f]/.test(cmd))
    return `command contains control characters (one line, printable only): ${JSON.stringify(cmd)}`;
  if (Buffer.byteLength(cmd) > 4000) return "command longer than 4000 bytes (the guest tty's line limit is 4095)";
  return null;
}

/** The line that runs `cmd` as command `id`. */
export function commandLine(id: number, cmd: string): string {
  return `${id} ${cmd}\n`;
}

/** A console line split at its result marker: the text before it, and the marker's id and rc if any. */
export function resultOf(line: string): { text: string; id?: number; rc?: number } {
  const m = /VBGUEST-RC (\d+) (\d+)$/.exec(line);
  return m ? { text: line.slice(0, m.index), id: Number(m[1]), rc: Number(m[2]) } : { text: line };
}

/** Splits console output into lines; the incomplete last one is kept for the next chunk. */
export class LineSplitter {
  private partial = '';

  /** the complete lines in `chunk` (with what came before), without \r\n */
  push(chunk: string): string[] {
    const parts = (this.partial + chunk).split('\n');
    this.partial = parts.pop() ?? '';
    return parts.map((p) => p.replace(/\r$/, ''));
  }

  /** the incomplete line, once (at exit) */
  flush(): string | null {
    const p = this.partial;
    this.partial = '';
    return p || null;
  }

  reset(): void {
    this.partial = '';
  }
}
