#!/usr/bin/env node
// The `tdist` command npm links at install time. It is committed rather than
// pointing the bin at dist/, so the link exists before the first build.
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";

const main = new URL("../dist/main.js", import.meta.url);
if (!existsSync(fileURLToPath(main))) {
  console.error(`tdist: ${fileURLToPath(main)} is missing; run \`npm run build\` in the repository root first`);
  process.exit(1);
}
await import(main.href);
