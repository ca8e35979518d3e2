/**
 * JSON schemas for request validation (ajv, through fastify). Unknown fields
 * are accepted and ignored, as OpenAI-compatible servers do; known fields
 * must have the right types and ranges, or the request gets a 400 naming the
 * field.
 */
const nullableNumber = (minimum?: number, maximum?: number) => ({
  anyOf: [
    {
      type: "number",
      ...(minimum === undefined ? {} : { minimum }),
      ...(maximum === undefined ? {} : { maximum }),
    },
    { type: "null" },
  ],
});

const nullableInteger = (minimum?: number, maximum?: number) => ({
  anyOf: [
    {
      type: "integer",
      ...(minimum === undefined ? {} : { minimum }),
      ...(maximum === undefined ? {} : { maximum }),
    },
    { type: "null" },
  ],
});

const common = {
  model: { type: "string", minLength: 1 },
  stream: { anyOf: [{ type: "boolean" }, { type: "null" }] },
  stream_options: {
    anyOf: [{ type: "object", properties: { include_usage: { type: "boolean" } } }, { type: "null" }],
  },
  max_tokens: nullableInteger(1),
  temperature: nullableNumber(0, 2),
  top_p: nullableNumber(0, 1),
  top_k: nullableInteger(-1),
  min_p: nullableNumber(0, 1),
  seed: nullableInteger(),
  stop: {
    anyOf: [{ type: "string" }, { type: "array", items: { type: "string" }, maxItems: 16 }, { type: "null" }],
  },
  stop_token_ids: { anyOf: [{ type: "array", items: { type: "integer", minimum: 0 } }, { type: "null" }] },
  presence_penalty: nullableNumber(-2, 2),
  frequency_penalty: nullableNumber(-2, 2),
  repetition_penalty: nullableNumber(0, 10),
  n: nullableInteger(1, 128),
  user: { type: "string" },
  ignore_eos: { type: "boolean" },
  min_tokens: { type: "integer", minimum: 0 },
  response_format: {
    anyOf: [{ type: "object", required: ["type"], properties: { type: { type: "string" } } }, { type: "null" }],
  },
  logit_bias: {
    anyOf: [
      {
        type: "object",
        maxProperties: 300,
        additionalProperties: { type: "number", minimum: -100, maximum: 100 },
      },
      { type: "null" },
    ],
  },
  nvext: {
    type: "object",
    properties: {
      router_config_override: {
        type: "object",
        properties: {
          overlap_score_weight: { type: "number", minimum: 0, maximum: 1_000_000 },
          router_temperature: { type: "number", minimum: 0, maximum: 1_000_000 },
        },
      },
    },
  },
} as const;

const contentPart = {
  type: "object",
  required: ["type"],
  properties: { type: { type: "string" }, text: { type: "string" } },
} as const;

export const chatCompletionSchema = {
  type: "object",
  required: ["model", "messages"],
  properties: {
    ...common,
    messages: {
      type: "array",
      minItems: 1,
      items: {
        type: "object",
        required: ["role"],
        properties: {
          role: { type: "string", enum: ["system", "developer", "user", "assistant", "tool"] },
          content: { anyOf: [{ type: "string" }, { type: "array", items: contentPart }, { type: "null" }] },
          name: { type: "string" },
          tool_calls: { type: "array" },
          tool_call_id: { type: "string" },
        },
      },
    },
    max_completion_tokens: nullableInteger(1),
    logprobs: { anyOf: [{ type: "boolean" }, { type: "null" }] },
    top_logprobs: nullableInteger(0, 20),
    tools: { anyOf: [{ type: "array", items: { type: "object" } }, { type: "null" }] },
    tool_choice: { anyOf: [{ type: "string" }, { type: "object" }, { type: "null" }] },
    functions: { anyOf: [{ type: "array", items: { type: "object" } }, { type: "null" }] },
    function_call: { anyOf: [{ type: "string" }, { type: "object" }, { type: "null" }] },
    chat_template_kwargs: { type: "object" },
  },
} as const;

export const completionSchema = {
  type: "object",
  required: ["model", "prompt"],
  properties: {
    ...common,
    prompt: {
      anyOf: [
        { type: "string" },
        { type: "array", minItems: 1, items: { type: "string" } },
        { type: "array", minItems: 1, items: { type: "integer", minimum: 0 } },
        { type: "array", minItems: 1, items: { type: "array", minItems: 1, items: { type: "integer", minimum: 0 } } },
      ],
    },
    logprobs: nullableInteger(0, 20),
    echo: { type: "boolean" },
    best_of: nullableInteger(1),
    suffix: { anyOf: [{ type: "string" }, { type: "null" }] },
  },
} as const;
