import { readdirSync, readFileSync } from "node:fs";

/** The direct children of a process (Linux `/proc/<pid>/task/<tid>/children`); empty when it has none or is gone. */
export function childPids(pid: number): number[] {
  try {
    return readdirSync(`/proc/${pid}/task`).flatMap((tid) =>
      readFileSync(`/proc/${pid}/task/${tid}/children`, "utf8")
        .split(" ")
        .filter((id) => id.trim() !== "")
        .map(Number),
    );
  } catch {
    return [];
  }
}

/** Whether a process with this pid exists (signal 0 probes without sending anything). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
