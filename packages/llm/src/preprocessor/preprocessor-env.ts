import { declareEnvVars, integerVar } from "@tdist/runtime";

/** The `TDIST_*` variables the preprocessor reads. */
export const PreprocessorEnv = declareEnvVars("tdist (llm)", {
  tokenizeTimeoutMs: integerVar(
    "TDIST_TOKENIZE_TIMEOUT_MS",
    10_000,
    "How long the frontend's tokenizer thread may take over one large prompt (waiting behind others included) before the thread is stopped and the request refused (400 prompt_too_complex).",
    { min: 1 },
  ),
});
