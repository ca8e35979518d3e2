import { TdistError } from "@tdist/runtime";
import type { StreamLoadState } from "./stream-load.js";

interface Gate {
  chunks: number;
  resolve: (state: StreamLoadState) => void;
  reject: (err: Error) => void;
}

/**
 * Promises that resolve once the load has received a number of content
 * chunks, so a disruption lands while streams are open, not at a time that
 * depends on the machine's speed. A gate still closed when the load ends
 * rejects: the disruption would have missed the load.
 */
export class ChunkGates {
  private readonly gates: Gate[] = [];
  private latest: StreamLoadState | undefined;
  private ended = false;

  /** Resolves with the load's state once `chunks` content chunks have arrived. */
  after(chunks: number): Promise<StreamLoadState> {
    if (this.latest !== undefined && this.latest.chunks >= chunks) return Promise.resolve(this.latest);
    if (this.ended) return Promise.reject(this.endedError(chunks));
    return new Promise((resolve, reject) => this.gates.push({ chunks, resolve, reject }));
  }

  /** The load's most recent state (undefined before its first chunk). */
  get state(): StreamLoadState | undefined {
    return this.latest;
  }

  onChunk(state: StreamLoadState): void {
    this.latest = state;
    for (const gate of [...this.gates]) {
      if (state.chunks < gate.chunks) continue;
      this.gates.splice(this.gates.indexOf(gate), 1);
      gate.resolve(state);
    }
  }

  loadEnded(): void {
    this.ended = true;
    for (const gate of this.gates.splice(0)) gate.reject(this.endedError(gate.chunks));
  }

  private endedError(chunks: number): Error {
    return new TdistError("internal", `the load ended before ${chunks} chunks arrived`);
  }
}
