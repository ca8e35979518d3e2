/**
 * The echo worker's chat template: the prompt is the text of the last user
 * message, with no role markers, so a chat request is echoed back as what the
 * user wrote (and `usage.prompt_tokens` counts that text). The echo engine
 * sees only token ids and cannot tell a marker from text, so the prompt
 * itself is what has to hold just the text; the template is the one place
 * that decides what the prompt holds, and a worker's card is how a model
 * says which template it uses.
 */
export const ECHO_CHAT_TEMPLATE =
  "{%- set last = namespace(text='') -%}" +
  "{%- for message in messages -%}" +
  "{%- if message.role == 'user' -%}{%- set last.text = message.content -%}{%- endif -%}" +
  "{%- endfor -%}" +
  "{{- last.text -}}";
