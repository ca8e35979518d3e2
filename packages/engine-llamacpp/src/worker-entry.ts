import { fileURLToPath } from "node:url";

/** How to start the engine's child process: the script and the Node flags it needs. */
export interface WorkerEntry {
  modulePath: string;
  execArgv: string[];
}

/**
 * Module hooks for running this package's TypeScript sources with plain Node
 * 20 (which cannot strip types): `.ts` files are transpiled with the
 * `typescript` package (type-only imports vanish, as under
 * `verbatimModuleSyntax`), and a relative `./x.js` import falls back to
 * `./x.ts`. Used only when this module itself runs from `src` (tests under
 * vitest); the built package starts `dist/*.js` with no hooks.
 */
function hooksSource(requireFrom: string): string {
  return `
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
let ts;
export async function resolve(specifier, context, next) {
  try {
    return await next(specifier, context);
  } catch (err) {
    if (specifier.startsWith(".") && specifier.endsWith(".js") && context.parentURL?.endsWith(".ts")) {
      return next(specifier.slice(0, -3) + ".ts", context);
    }
    throw err;
  }
}
export async function load(url, context, next) {
  if (!url.startsWith("file:") || !url.endsWith(".ts")) return next(url, context);
  ts ??= createRequire(${JSON.stringify(requireFrom)})("typescript");
  const fileName = fileURLToPath(url);
  const output = ts.transpileModule(await readFile(fileName, "utf8"), {
    fileName,
    compilerOptions: {
      module: ts.ModuleKind.ESNext,
      target: ts.ScriptTarget.ES2022,
      verbatimModuleSyntax: true,
      inlineSourceMap: true,
    },
  });
  return { format: "module", source: output.outputText, shortCircuit: true };
}
`;
}

function dataUrl(source: string): string {
  return `data:text/javascript;base64,${Buffer.from(source).toString("base64")}`;
}

/**
 * The child entry next to this module: `llamacpp-worker-process.js` when
 * running from `dist`, or the `.ts` source with TypeScript hooks (see
 * `hooksSource`) and the `tdist-source` export condition when running from
 * `src`. Both modes use the same file, so tests exercise the real child.
 */
export function llamaCppWorkerEntry(): WorkerEntry {
  const here = import.meta.url;
  if (!here.endsWith(".ts")) {
    return { modulePath: fileURLToPath(new URL("./llamacpp-worker-process.js", here)), execArgv: [] };
  }
  const register = `import { register } from "node:module"; register(${JSON.stringify(dataUrl(hooksSource(here)))});`;
  return {
    modulePath: fileURLToPath(new URL("./llamacpp-worker-process.ts", here)),
    execArgv: ["--conditions=tdist-source", "--import", dataUrl(register)],
  };
}
