import { Template } from "@huggingface/jinja";
import { TdistError } from "@tdist/runtime";
import { RequestParamError } from "./request-param-error.js";

/** An OpenAI content part; only `text` parts can be rendered into a prompt. */
export interface ChatContentPartInput {
  type: string;
  text?: string;
}

/**
 * One chat message as the OpenAI API sends it; structurally a subset of the
 * frontend's `ChatMessage`, so those pass straight in.
 */
export interface ChatMessageInput {
  role: string;
  content?: string | ChatContentPartInput[] | null;
  name?: string;
  tool_calls?: unknown[];
  tool_call_id?: string;
  reasoning_content?: string;
}

export interface ChatTemplateInput {
  messages: readonly ChatMessageInput[];
  /** OpenAI tool definitions, passed to the template as `tools`. */
  tools?: readonly unknown[] | null;
  /** End with the assistant header so the model answers. Default `true`. */
  addGenerationPrompt?: boolean;
  /** Extra template variables (e.g. `{ enable_thinking: false }`); cannot replace the variables above. */
  chatTemplateKwargs?: Record<string, unknown>;
}

/** A plain ChatML template for models whose tokenizer has none. */
export const CHATML_FALLBACK_TEMPLATE =
  "{%- for message in messages %}" +
  "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}" +
  "{%- endfor %}" +
  "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}";

interface JinjaTemplate {
  render(items: Record<string, unknown>): string;
}

const compiled = new Map<string, JinjaTemplate>();

function compile(source: string): JinjaTemplate {
  let template = compiled.get(source);
  if (template === undefined) {
    try {
      template = new Template(source) as JinjaTemplate;
    } catch (err) {
      throw TdistError.wrap(err, "bad_request", "chat template does not parse");
    }
    compiled.set(source, template);
  }
  return template;
}

/**
 * A model's Jinja chat template (tokenizer_config.json's `chat_template`),
 * rendered with `@huggingface/jinja` the way transformers'
 * `apply_chat_template` renders it.
 *
 * ```ts
 * const template = new ChatTemplate(card.chatTemplate ?? CHATML_FALLBACK_TEMPLATE, { eosToken: card.eosToken });
 * template.render({ messages: [{ role: "user", content: "Hi" }] });
 * // Qwen3: "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
 * ```
 *
 * Messages are normalised before rendering, as vLLM does: content-part
 * arrays become their text parts joined by "\n", missing content becomes
 * "", `developer` becomes `system`, and tool-call arguments given as JSON
 * strings are parsed so templates that `tojson` them print JSON once.
 * Compiled templates are cached by source text.
 */
export class ChatTemplate {
  readonly source: string;
  readonly #template: JinjaTemplate;
  readonly #bosToken: string | undefined;
  readonly #eosToken: string | undefined;

  constructor(source: string, options: { bosToken?: string | undefined; eosToken?: string | undefined } = {}) {
    this.source = source;
    this.#template = compile(source);
    this.#bosToken = options.bosToken;
    this.#eosToken = options.eosToken;
  }

  /** Renders the prompt; a template error (e.g. `raise_exception`) is a `bad_request` naming `messages`. */
  render(input: ChatTemplateInput): string {
    const messages = input.messages.map(normalizeMessage);
    const variables: Record<string, unknown> = {
      ...input.chatTemplateKwargs,
      messages,
      add_generation_prompt: input.addGenerationPrompt ?? true,
      bos_token: this.#bosToken ?? "",
      eos_token: this.#eosToken ?? "",
    };
    if (input.tools !== undefined && input.tools !== null && input.tools.length > 0) {
      variables.tools = input.tools;
    }
    try {
      return this.#template.render(variables);
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      throw new RequestParamError("messages", `the chat template could not render these messages: ${message}`, {
        cause: err,
      });
    }
  }
}

function normalizeMessage(message: ChatMessageInput, index: number): Record<string, unknown> {
  if (typeof message !== "object" || message === null || typeof message.role !== "string") {
    throw new RequestParamError(`messages[${index}].role`, `messages[${index}] needs a string role`);
  }
  const normalized: Record<string, unknown> = {
    role: message.role === "developer" ? "system" : message.role,
    content: flattenContent(message.content, index),
  };
  if (message.name !== undefined) normalized.name = message.name;
  if (message.tool_call_id !== undefined) normalized.tool_call_id = message.tool_call_id;
  if (message.reasoning_content !== undefined && message.reasoning_content !== null) {
    normalized.reasoning_content = message.reasoning_content;
  }
  if (Array.isArray(message.tool_calls) && message.tool_calls.length > 0) {
    normalized.tool_calls = message.tool_calls.map(parseToolCallArguments);
  }
  return normalized;
}

function flattenContent(content: ChatMessageInput["content"], index: number): string {
  if (content === undefined || content === null) return "";
  if (typeof content === "string") return content;
  if (!Array.isArray(content)) {
    throw new RequestParamError(
      `messages[${index}].content`,
      `messages[${index}].content must be a string or an array`,
    );
  }
  const texts: string[] = [];
  for (const [partIndex, part] of content.entries()) {
    if (part?.type !== "text" || typeof part.text !== "string") {
      const param = `messages[${index}].content[${partIndex}]`;
      throw new RequestParamError(param, `${param}: only text content parts are supported (got ${String(part?.type)})`);
    }
    texts.push(part.text);
  }
  return texts.join("\n");
}

function parseToolCallArguments(call: unknown): unknown {
  if (typeof call !== "object" || call === null) return call;
  const fn = (call as { function?: unknown }).function;
  if (typeof fn !== "object" || fn === null) return call;
  const args = (fn as { arguments?: unknown }).arguments;
  if (typeof args !== "string") return call;
  let parsed: unknown;
  try {
    parsed = JSON.parse(args);
  } catch {
    return call;
  }
  return { ...call, function: { ...fn, arguments: parsed } };
}
