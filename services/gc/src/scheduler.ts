// When to collect: containerd's gc scheduler (gc/scheduler/scheduler.go) with its settings, plus
// what containerd lacks: a collection at least every `interval` and right after the earliest
// known expiry, so an expired lease (an interrupted pull's) goes within that time rather than at
// the next deletion.
//
// containerd's rules: a deletion schedules a collection after `schedule_delay` (at once when
// `deletion_threshold` is 0, else once that many happened); `mutation_threshold` writes make
// the next scheduled tick collect; a manual trigger (Collect, a synchronous lease delete) always
// does; the first collection is `startup_delay` after start; between collections the tick
// interval keeps collection pauses to about `pause_threshold` of the time.
//
// One difference: containerd's first collection runs once its plugins are up. Berth's collector
// is a process of its own, started before the services it asks, so a first collection that is
// skipped (a service did not answer) is retried soon, 100 ms doubling to containerd's retry gap,
// rather than a second and more later, when it would take what clients made meanwhile.

export interface SchedulerConfig {
  pauseThreshold: number;
  deletionThreshold: number;
  mutationThreshold: number;
  scheduleDelay: number;
  startupDelay: number;
  /** Berth: collect at least this often (ms; 0: never on time alone) */
  interval: number;
}

export interface Collected {
  /** how long the collection took, ms */
  durationMs: number;
  /** the earliest expiry ahead that the mark saw (ms since the epoch) */
  nextExpiry?: number;
}

type Waiter<S> = { resolve: (s: S) => void; reject: (e: unknown) => void };

export class Scheduler<S extends Collected> {
  private timer?: NodeJS.Timeout;
  private nextAt?: number;
  private lastStart?: number;
  private lastEnd?: number;
  private tickInterval = 1000;
  private gcTime = 0;
  private collections = 0;
  /** collections skipped in a row */
  private skipped = 0;
  private triggered = false;
  private deletions = 0;
  private mutations = 0;
  private nextExpiry?: number;
  private running = false;
  private waiters: Waiter<S>[] = [];
  private stopped = false;

  constructor(private readonly cfg: SchedulerConfig, private readonly collect: () => Promise<S>, private readonly onError: (e: unknown) => void = () => undefined) {
    cfg.pauseThreshold = Math.min(0.5, Math.max(0, cfg.pauseThreshold));
  }

  start(): this {
    if (this.cfg.startupDelay > 0) this.schedule(this.cfg.startupDelay);
    else if (this.cfg.interval > 0) this.schedule(this.cfg.interval);
    return this;
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    for (const w of this.waiters.splice(0)) w.reject(new Error('gc: stopping'));
  }

  /** Services' writes since their last notice (containerd's mutation callback). `ts`: when they were reported. */
  mutated(mutations: number, deletions: number, ts = Date.now()): void {
    // what happened before the current (or last) collection began is part of it
    if (this.lastStart !== undefined && ts < this.lastStart) return;
    this.mutations += mutations;
    this.deletions += deletions;
    this.check();
  }

  /** A collection that starts after this call, and its result (containerd's ScheduleAndWait). */
  collectAndWait(): Promise<S> {
    return new Promise<S>((resolve, reject) => {
      this.waiters.push({ resolve, reject });
      this.triggered = true;
      this.check();
    });
  }

  private check(): void {
    const c = this.cfg;
    const immediate =
      this.triggered ||
      (c.deletionThreshold > 0 && this.deletions >= c.deletionThreshold) ||
      (this.nextAt === undefined && ((c.deletionThreshold === 0 && this.deletions > 0) || (c.mutationThreshold > 0 && this.mutations >= c.mutationThreshold)));
    if (immediate && (this.nextAt === undefined || this.nextAt > Date.now() + c.scheduleDelay)) this.schedule(c.scheduleDelay);
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    clearTimeout(this.timer);
    this.nextAt = Date.now() + ms;
    this.timer = setTimeout(() => void this.tick(), ms);
    this.timer.unref();
  }

  /** Whether time alone asks for a collection: the interval passed, or something known has expired. */
  private due(now: number): boolean {
    if (this.cfg.interval > 0 && (this.lastEnd === undefined || now - this.lastEnd >= this.cfg.interval)) return true;
    return this.nextExpiry !== undefined && this.nextExpiry <= now;
  }

  private async tick(): Promise<void> {
    this.timer = undefined;
    this.nextAt = undefined;
    if (this.running) return; // the running one reschedules when it ends
    const now = Date.now();
    if (!this.triggered && this.lastEnd !== undefined && this.deletions === 0 && (this.cfg.mutationThreshold === 0 || this.mutations < this.cfg.mutationThreshold) && !this.due(now)) {
      this.schedule(this.nextDelay(now));
      return;
    }
    this.running = true;
    const waiters = this.waiters.splice(0);
    this.triggered = false;
    this.deletions = 0;
    this.mutations = 0;
    this.lastStart = now;
    let failed = false;
    try {
      const stats = await this.collect();
      this.gcTime += stats.durationMs;
      this.collections++;
      this.nextExpiry = stats.nextExpiry;
      if (this.cfg.pauseThreshold > 0) {
        const avg = this.gcTime / this.collections;
        this.tickInterval = Math.max(10, avg / this.cfg.pauseThreshold - avg);
      }
      for (const w of waiters) w.resolve(stats);
      this.skipped = 0;
    } catch (e) {
      this.skipped++;
      // the first ones while the node's services start are expected: said only if they go on
      if (this.collections > 0 || this.skipped > 4) this.onError(e);
      for (const w of waiters) w.reject(e);
      // a skipped collection keeps a reason to run: containerd retries after the same gap plus a second
      this.deletions++;
      failed = true;
    } finally {
      this.running = false;
      this.lastEnd = Date.now();
    }
    if (this.waiters.length) this.triggered = true; // asked for while this one ran: the next one is theirs
    this.schedule(this.triggered ? this.cfg.scheduleDelay : failed ? this.retryDelay() : this.nextDelay(this.lastEnd));
  }

  /** After a skipped collection: containerd's gap plus a second; before any collection ran, soon (see the top). */
  private retryDelay(): number {
    const gap = this.tickInterval + 1000;
    return this.collections === 0 ? Math.min(gap, 100 * 2 ** (this.skipped - 1)) : gap;
  }

  private nextDelay(now: number): number {
    let d = this.tickInterval;
    if (this.cfg.interval > 0) d = Math.min(d, Math.max(0, (this.lastEnd ?? now) + this.cfg.interval - now));
    if (this.nextExpiry !== undefined) d = Math.min(d, Math.max(0, this.nextExpiry - now + 5));
    return d;
  }
}
