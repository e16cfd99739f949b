// Silence is judged over time this process was awake to hear. A liveness timer that fires long
// after it was due says this process stalled (starved of CPU, a long synchronous task): the
// peer's beats from that time are still unread in the socket, and the timers phase runs before
// they are read. Without this, a busy caller declared live services gone.

/** The ticks of one liveness timer, and how late each came. */
export class TimerTicks {
  private last: number;

  constructor(
    private readonly every: number,
    now = Date.now(),
  ) {
    this.last = now;
  }

  /** How long the process stalled before this tick (0 when the tick is within an interval of due). */
  stalled(now = Date.now()): number {
    const gap = now - this.last;
    this.last = now;
    return gap > 2 * this.every ? gap - this.every : 0;
  }
}
