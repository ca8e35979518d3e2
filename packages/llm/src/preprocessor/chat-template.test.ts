import { TdistError } from "@tdist/runtime";
import { describe, expect, it } from "vitest";
import { builtinTokenizerFiles } from "../assets/builtin-tokenizers.js";
import { CHATML_FALLBACK_TEMPLATE, ChatTemplate } from "./chat-template.js";
import { RequestParamError } from "./request-param-error.js";
import { chatTemplateFromConfig } from "./tokenizer-config.js";

const config = builtinTokenizerFiles("qwen3").tokenizerConfig;
const qwen = new ChatTemplate(chatTemplateFromConfig(config) ?? "", { eosToken: "<|im_end|>" });

const weatherTool = {
  type: "function",
  function: {
    name: "get_weather",
    description: "Get the weather in a city",
    parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
  },
};

describe("chat template", () => {
  it("chat template - renders one user turn with the generation prompt", () => {
    expect(qwen.render({ messages: [{ role: "user", content: "Hello!" }] })).toBe(
      "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n",
    );
  });

  it("chat template - renders a system message and multiple turns", () => {
    const rendered = qwen.render({
      messages: [
        { role: "system", content: "You are terse." },
        { role: "user", content: "What is 2+2?" },
        { role: "assistant", content: "4" },
        { role: "user", content: "And 3+3? 用中文" },
      ],
    });
    expect(rendered).toBe(
      "<|im_start|>system\nYou are terse.<|im_end|>\n" +
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n" +
        "<|im_start|>assistant\n4<|im_end|>\n" +
        "<|im_start|>user\nAnd 3+3? 用中文<|im_end|>\n" +
        "<|im_start|>assistant\n",
    );
  });

  it("chat template - leaves out the assistant header when add_generation_prompt is false", () => {
    const rendered = qwen.render({
      messages: [
        { role: "user", content: "Hi" },
        { role: "assistant", content: "Hello" },
      ],
      addGenerationPrompt: false,
    });
    // The last assistant turn comes after the last user query, so Qwen3 writes an (empty) think block.
    expect(rendered).toBe(
      "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nHello<|im_end|>\n",
    );
  });

  it("chat template - passes extra kwargs such as enable_thinking", () => {
    const rendered = qwen.render({
      messages: [{ role: "user", content: "Hi" }],
      chatTemplateKwargs: { enable_thinking: false },
    });
    expect(rendered).toBe("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n");
  });

  it("chat template - kwargs cannot replace messages or add_generation_prompt", () => {
    const rendered = qwen.render({
      messages: [{ role: "user", content: "Hi" }],
      chatTemplateKwargs: { messages: [], add_generation_prompt: false },
    });
    expect(rendered).toBe("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  });

  it("chat template - writes the tools section with each tool's JSON", () => {
    const rendered = qwen.render({
      messages: [
        { role: "system", content: "Be helpful." },
        { role: "user", content: "Weather in Paris?" },
      ],
      tools: [weatherTool],
    });
    const toolJson =
      '{"type": "function", "function": {"name": "get_weather", "description": "Get the weather in a city", ' +
      '"parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}';
    expect(rendered).toBe(
      "<|im_start|>system\nBe helpful.\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n" +
        "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n" +
        `${toolJson}\n</tools>\n\n` +
        "For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n" +
        '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n' +
        "<|im_start|>user\nWeather in Paris?<|im_end|>\n<|im_start|>assistant\n",
    );
  });

  it("chat template - renders tool calls with JSON-string arguments and tool results", () => {
    const rendered = qwen.render({
      messages: [
        { role: "user", content: "Weather in Paris?" },
        {
          role: "assistant",
          content: null,
          tool_calls: [
            { id: "c1", type: "function", function: { name: "get_weather", arguments: '{"city": "Paris"}' } },
          ],
        },
        { role: "tool", tool_call_id: "c1", content: "sunny, 21C" },
      ],
    });
    expect(rendered).toBe(
      "<|im_start|>user\nWeather in Paris?<|im_end|>\n" +
        '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>\n' +
        "<|im_start|>user\n<tool_response>\nsunny, 21C\n</tool_response><|im_end|>\n" +
        "<|im_start|>assistant\n",
    );
  });

  it("chat template - flattens text content parts and maps developer to system", () => {
    const rendered = qwen.render({
      messages: [
        { role: "developer", content: [{ type: "text", text: "Rules." }] },
        {
          role: "user",
          content: [
            { type: "text", text: "Line one" },
            { type: "text", text: "Line two" },
          ],
        },
      ],
    });
    expect(rendered).toBe(
      "<|im_start|>system\nRules.<|im_end|>\n<|im_start|>user\nLine one\nLine two<|im_end|>\n<|im_start|>assistant\n",
    );
  });

  it("chat template - refuses non-text content parts naming the field", () => {
    let error: unknown;
    try {
      qwen.render({ messages: [{ role: "user", content: [{ type: "image_url" }] }] });
    } catch (err) {
      error = err;
    }
    expect(TdistError.is(error, "bad_request")).toBe(true);
    expect((error as RequestParamError).param).toBe("messages[0].content[0]");
  });

  it("chat template - turns raise_exception into a bad_request on messages", () => {
    const strict = new ChatTemplate("{{ raise_exception('roles must alternate') }}");
    let error: unknown;
    try {
      strict.render({ messages: [{ role: "user", content: "x" }] });
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(RequestParamError);
    expect((error as RequestParamError).code).toBe("bad_request");
    expect((error as RequestParamError).param).toBe("messages");
  });

  it("chat template - a template that does not parse is a bad_request", () => {
    expect(() => new ChatTemplate("{% for %}")).toThrow(TdistError);
  });

  it("chat template - passes bos_token and eos_token", () => {
    const llamaLike = new ChatTemplate(
      "{{ bos_token }}{% for m in messages %}[{{ m.role }}] {{ m.content }}{{ eos_token }}{% endfor %}",
      { bosToken: "<s>", eosToken: "</s>" },
    );
    expect(llamaLike.render({ messages: [{ role: "user", content: "hi" }] })).toBe("<s>[user] hi</s>");
  });

  it("chat template - the ChatML fallback renders the Qwen layout", () => {
    const fallback = new ChatTemplate(CHATML_FALLBACK_TEMPLATE);
    const messages = [
      { role: "system", content: "S" },
      { role: "user", content: "U" },
    ];
    expect(fallback.render({ messages })).toBe(
      "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n",
    );
    expect(fallback.render({ messages, addGenerationPrompt: false })).toBe(
      "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n",
    );
  });

  it("chat template - picks the tool_use template from a named list when tools are given", () => {
    const named = {
      chat_template: [
        { name: "default", template: "D" },
        { name: "tool_use", template: "T" },
      ],
    };
    expect(chatTemplateFromConfig(named)).toBe("D");
    expect(chatTemplateFromConfig(named, { tools: true })).toBe("T");
    expect(chatTemplateFromConfig({})).toBeUndefined();
  });
});
