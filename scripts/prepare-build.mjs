#!/usr/bin/env node
// `npm install`'s prepare step: builds the workspaces so `npx tdist` works at once.
// A build error is reported but does not undo the install: the dependencies are
// in place, and `npm run build` shows the errors again once they are fixed.
import { spawnSync } from "node:child_process";

const npm = process.platform === "win32" ? "npm.cmd" : "npm";
const result = spawnSync(npm, ["run", "build", "--silent"], { stdio: "inherit", shell: process.platform === "win32" });
if (result.status !== 0) {
  console.error(
    "\nnpm install: the dependencies are installed but the build failed (errors above); run `npm run build`",
  );
}
