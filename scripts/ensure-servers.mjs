#!/usr/bin/env node
/**
 * `npm test`'s pretest: makes sure the real servers that integration tests
 * start through @tdist/testkit are installed. Installs the Debian packages
 * when run as root; otherwise says what to run and exits non-zero.
 *
 * The tests never use a system-wide etcd service or port 2379: testkit starts
 * its own servers on free ports, so an etcd unit that the package may enable
 * is irrelevant (and usually not started inside containers).
 */
import { spawnSync } from "node:child_process";
import { accessSync, constants } from "node:fs";
import { delimiter, join } from "node:path";

/** binary -> Debian package that provides it */
const required = [
  { binary: "etcd", debianPackage: "etcd-server" },
  { binary: "nats-server", debianPackage: "nats-server" },
];

// Debian puts nats-server in /usr/sbin, which a non-root PATH often lacks; testkit looks there too.
const systemDirs = ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"];

function findExecutable(name) {
  const dirs = [...(process.env.PATH ?? "").split(delimiter).filter(Boolean), ...systemDirs];
  for (const dir of dirs) {
    try {
      accessSync(join(dir, name), constants.X_OK);
      return join(dir, name);
    } catch {
      // keep looking
    }
  }
  return undefined;
}

function missingServers() {
  return required.filter(({ binary }) => findExecutable(binary) === undefined);
}

function run(command, args) {
  console.log(`ensure-servers: ${command} ${args.join(" ")}`);
  const result = spawnSync(command, args, {
    stdio: "inherit",
    env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
  });
  if (result.error) throw result.error;
  return result.status === 0;
}

function main() {
  const missing = missingServers();
  if (missing.length === 0) return 0;
  const packages = missing.map((entry) => entry.debianPackage);
  const names = missing.map((entry) => entry.binary).join(", ");
  const isRoot = typeof process.getuid === "function" && process.getuid() === 0;
  if (!isRoot) {
    console.error(
      `ensure-servers: ${names} not found. Integration tests start real servers; install them with:\n` +
        `  sudo apt-get update && sudo apt-get install -y ${packages.join(" ")}`,
    );
    return 1;
  }
  const hasAptGet = findExecutable("apt-get") !== undefined;
  if (!hasAptGet) {
    console.error(`ensure-servers: ${names} not found and apt-get is unavailable; install ${packages.join(" ")}.`);
    return 1;
  }
  const installArgs = ["install", "-y", ...packages];
  if (!run("apt-get", ["update"]) || !run("apt-get", installArgs)) {
    console.error(`ensure-servers: installing ${packages.join(" ")} failed (see apt-get output above).`);
    return 1;
  }
  const stillMissing = missingServers();
  if (stillMissing.length > 0) {
    console.error(
      `ensure-servers: still missing after install: ${stillMissing.map((entry) => entry.binary).join(", ")}`,
    );
    return 1;
  }
  console.log(`ensure-servers: installed ${packages.join(" ")}`);
  return 0;
}

process.exitCode = main();
