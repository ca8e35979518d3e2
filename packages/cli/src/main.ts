#!/usr/bin/env node
import { runCli } from "./cli.js";

const code = await runCli(process.argv.slice(2));
process.exitCode = code;
// A clean stop leaves nothing running and the process ends by itself. Should a library leave a handle
// open after that (a socket, a timer), exit anyway: a stopped server must never linger.
setTimeout(() => process.exit(code), 3_000).unref();
