/** When anything was last heard from one peer process, shared by all of its open streams. */
export interface PeerClock {
  lastHeardAt: number;
  streams: number;
}

/**
 * Liveness per peer (a server's subject, or a caller's inbox) rather than
 * per stream alone: under a heavy backlog one stream's heartbeat can queue
 * behind thousands of other streams' messages, but while any stream of the
 * peer is heard the peer is alive. A short silence of the whole peer means it
 * is gone; a stream is judged on its own only over a much longer silence.
 */
export class PeerLiveness {
  private readonly peers = new Map<string, PeerClock>();

  /** The clock of `key`, counting one more open stream on it. */
  attach(key: string, now: number): PeerClock {
    let clock = this.peers.get(key);
    if (clock === undefined) {
      clock = { lastHeardAt: now, streams: 0 };
      this.peers.set(key, clock);
    }
    clock.streams++;
    return clock;
  }

  /** One stream of `key` closed; the clock is forgotten with its last stream. */
  detach(key: string): void {
    const clock = this.peers.get(key);
    if (clock === undefined) return;
    if (--clock.streams <= 0) this.peers.delete(key);
  }

  /** This process stalled for `ms`: nobody is blamed for the silence it caused. */
  excuse(ms: number): void {
    for (const clock of this.peers.values()) clock.lastHeardAt += ms;
  }

  clear(): void {
    this.peers.clear();
  }
}
