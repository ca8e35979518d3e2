import { readFileSync } from "node:fs";
import semver from "semver";
import { describe, expect, it } from "vitest";

interface LockedPackage {
  version?: string;
  engines?: { node?: string };
  os?: string[];
  cpu?: string[];
}

const lock = JSON.parse(readFileSync(new URL("../package-lock.json", import.meta.url), "utf8")) as {
  packages: Record<string, LockedPackage>;
};
const root = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as {
  engines: { node: string };
};

/** What npm would install here: optional platform packages for other systems are skipped, and so is their check. */
function installedHere(entry: LockedPackage): boolean {
  return (
    (entry.os === undefined || entry.os.includes(process.platform)) &&
    (entry.cpu === undefined || entry.cpu.includes(process.arch))
  );
}

describe("locked engines", () => {
  it("locked engines - every locked package accepts the oldest Node major the root declares (no EBADENGINE on npm install)", () => {
    const oldest = semver.minVersion(root.engines.node);
    expect(oldest).not.toBeNull();
    // Packages may ask for a later minor of that major (^20.17); what must not happen is a newer major only.
    const oldestMajor = `${oldest?.major}.9999.0`;
    const tooNew = Object.entries(lock.packages)
      .filter(([path, entry]) => path !== "" && installedHere(entry) && entry.engines?.node !== undefined)
      .filter(([, entry]) => !semver.satisfies(oldestMajor, entry.engines?.node as string))
      .map(([path, entry]) => `${path}@${entry.version} wants node ${entry.engines?.node}`);
    expect(tooNew).toEqual([]);
  });
});
