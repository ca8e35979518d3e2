/**
 * The parsed `data:` events of an SSE response body, the `[DONE]` marker as
 * the string, read to the end of the body; `onEvent` hears the running count.
 */
export async function sseEvents(response: Response, onEvent: (count: number) => void = () => {}): Promise<unknown[]> {
  const events: unknown[] = [];
  let pending = "";
  const decoder = new TextDecoder();
  for await (const bytes of response.body as unknown as AsyncIterable<Uint8Array>) {
    pending += decoder.decode(bytes, { stream: true });
    for (let at = pending.indexOf("\n\n"); at >= 0; at = pending.indexOf("\n\n")) {
      const data = pending.slice(0, at).replace(/^data: /, "");
      pending = pending.slice(at + 2);
      events.push(data === "[DONE]" ? data : JSON.parse(data));
      onEvent(events.length);
    }
  }
  return events;
}
