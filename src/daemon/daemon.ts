/**
 * The many-port daemon (`vhost-bridge serve --config FILE`): the configured ports (manager.ts),
 * the control socket (control.ts, methods.ts), reload of the file (SIGHUP, by the caller) and
 * sockets passed by systemd (activation.ts).
 */
import { dirname } from 'node:path';
import type { Logger } from '../log.js';
import { CONTROL_FD_NAME, listenFds } from '../host/activation.js';
import { kernelParts } from '../port/parts.js';
import { ConfigError, loadConfig } from './config.js';
import { ControlError, ControlServer } from './control.js';
import { type PartsFor, PortManager, type ReloadResult } from './manager.js';
import { controlHandler } from './methods.js';
import { ensureSocketDir } from './socket-dir.js';

export interface DaemonOptions {
  /** The configuration file (read at start and on reload). */
  configFile: string;
  log: Logger;
  /** What each port is built on (default: the real kernel, kernelParts; unit tests give a recording fake). */
  partsFor?: PartsFor;
  /** Where LISTEN_FDS and friends are read (default process.env); the variables are removed. */
  env?: NodeJS.ProcessEnv;
}

export class Daemon {
  private closed = false;

  private constructor(
    private readonly opts: DaemonOptions,
    readonly manager: PortManager,
    readonly control: ControlServer,
  ) {}

  /** Read the configuration, take the inherited sockets, open the control socket, start every port. */
  static start(opts: DaemonOptions): Daemon {
    const config = loadConfig(opts.configFile);
    const inherited = listenFds(opts.env ?? process.env);
    const controlFd = inherited.get(CONTROL_FD_NAME);
    inherited.delete(CONTROL_FD_NAME);
    for (const [name, fd] of inherited) {
      if (!config.ports.has(name))
        opts.log.warn(
          `systemd passed a socket named '${name}' (fd ${fd}) but no port has that name; it is kept for a port ` +
            `added later`,
        );
    }
    const manager = new PortManager({
      partsFor: opts.partsFor ?? ((_, log) => kernelParts(log)),
      log: opts.log,
      inherited,
    });
    let daemon: Daemon | null = null;
    const handler = controlHandler(manager, {
      reload: () => {
        if (!daemon) throw new ControlError('the daemon is still starting');
        return daemon.reloadForControl();
      },
    });
    let control: ControlServer;
    try {
      if (controlFd !== undefined) control = ControlServer.fromFd(controlFd, handler, opts.log, config.control.peers);
      else {
        ensureSocketDir(dirname(config.control.path));
        control = ControlServer.listen(
          config.control.path,
          { mode: config.control.mode, gid: config.control.group },
          handler,
          opts.log,
          config.control.peers,
        );
      }
    } catch (e) {
      manager.close();
      throw new Error(
        `control socket ${controlFd !== undefined ? `fd ${controlFd}` : config.control.path}: ${(e as Error).message}`,
      );
    }
    for (const spec of config.ports.values()) manager.add(spec, 'config');
    const running = manager.list().filter((p) => p.port).length;
    opts.log.info(
      `serving ${running} of ${config.ports.size} ` +
        `port(s)${running < config.ports.size ? ' (see the errors above)' : ''}`,
    );
    daemon = new Daemon(opts, manager, control);
    return daemon;
  }

  /** Read the file again and apply its ports. Throws ConfigError (nothing changed) if it is not valid. */
  reload(): ReloadResult {
    const config = loadConfig(this.opts.configFile);
    // The control socket is where `ctl reload` itself came in, and where the unit's ExecReload and
    // every script look: it moves only at a restart, and a file that moves it is refused as a whole.
    if (this.control.path !== null && config.control.path !== this.control.path)
      throw new ConfigError(
        [
          {
            field: 'control.path',
            message:
              `${config.control.path} is not the running control socket ${this.control.path}; ` +
              'it moves only at a restart',
          },
        ],
        `${this.opts.configFile}: `,
      );
    const r = this.manager.reload(config.ports);
    const list = (k: string, names: string[]) => (names.length ? `${k} ${names.join(', ')}` : `${k} none`);
    this.opts.log.info(
      `reload: ${list('added', r.added)}; ${list('removed', r.removed)}; ${list('changed', r.changed)}; ` +
        `${r.unchanged.length} unchanged`,
    );
    for (const f of r.failed) this.opts.log.warn(`reload: ${f.name} is not running: ${f.error}`);
    return r;
  }

  /**
   * `reload` over the control socket: as SIGHUP does, and an invalid file is logged the same way
   * and refused to the client with its message (nothing changed).
   */
  reloadForControl(): ReloadResult {
    this.opts.log.info(`control: reloading ${this.opts.configFile}`);
    try {
      return this.reload();
    } catch (e) {
      if (!(e instanceof ConfigError)) throw e;
      this.opts.log.error(
        `reload: the configuration is not valid; the running ports are kept as they are:\n${e.message}`,
      );
      throw new ControlError(`the configuration is not valid; the running ports are kept as they are:\n${e.message}`);
    }
  }

  /** Stop every port and the control socket. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.control.close();
    this.manager.close();
  }
}
