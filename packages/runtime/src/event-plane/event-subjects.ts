import { TdistError } from "../errors/tdist-error.js";
import { validateName } from "../names.js";

/**
 * Event subject layout. Names are validated like namespace/component names
 * (lower-case `[a-z0-9_-]`), which are valid NATS tokens, so a subject never
 * needs escaping:
 *
 * ```
 * tdist.ns.{namespace}.{topic}               namespace-wide event
 * tdist.ns.{namespace}.{component}.{topic}   component event
 * tdist.ns.{namespace}.>                     every event of the namespace
 * ```
 *
 * The token count tells the two event kinds apart, so wildcards such as
 * `tdist.ns.dynamo.*.kv_events` (the topic from every component) stay exact.
 */
export const EVENT_SUBJECT_ROOT = "tdist.ns";

const TOPIC_PATTERN = /^[a-z0-9][a-z0-9_-]{0,62}$/;

function validateTopic(topic: unknown): string {
  if (typeof topic !== "string" || !TOPIC_PATTERN.test(topic)) {
    throw new TdistError(
      "invalid_name",
      `invalid event topic ${JSON.stringify(topic)}: use lower-case letters, digits, '-' and '_' (1-63 characters)`,
    );
  }
  return topic;
}

/** The subject of a component's events: `tdist.ns.{namespace}.{component}.{topic}`. */
export function eventSubject(namespace: string, component: string, topic: string): string {
  return `${EVENT_SUBJECT_ROOT}.${validateName("namespace", namespace)}.${validateName("component", component)}.${validateTopic(topic)}`;
}

/** The subject of a namespace-wide event: `tdist.ns.{namespace}.{topic}`. */
export function namespaceEventSubject(namespace: string, topic: string): string {
  return `${EVENT_SUBJECT_ROOT}.${validateName("namespace", namespace)}.${validateTopic(topic)}`;
}

/** A subscription subject matching every event of a namespace: `tdist.ns.{namespace}.>`. */
export function namespaceEventsWildcard(namespace: string): string {
  return `${EVENT_SUBJECT_ROOT}.${validateName("namespace", namespace)}.>`;
}

const BAD_TOKEN_CHARS = /[\s]/;

function checkTokens(subject: unknown, allowWildcards: boolean): string[] {
  if (typeof subject !== "string" || subject.length === 0) {
    throw new TdistError("bad_request", `invalid subject ${JSON.stringify(subject)}: must be a non-empty string`);
  }
  const tokens = subject.split(".");
  tokens.forEach((token, i) => {
    if (token.length === 0 || BAD_TOKEN_CHARS.test(token)) {
      throw new TdistError(
        "bad_request",
        `invalid subject ${JSON.stringify(subject)}: tokens must be non-empty and contain no whitespace`,
      );
    }
    const wildcard = token === "*" || token === ">";
    if (wildcard && !allowWildcards) {
      throw new TdistError("bad_request", `invalid publish subject ${JSON.stringify(subject)}: wildcards not allowed`);
    }
    if (token === ">" && i !== tokens.length - 1) {
      throw new TdistError("bad_request", `invalid subject ${JSON.stringify(subject)}: '>' must be the last token`);
    }
  });
  return tokens;
}

/** Validates a concrete (publish) subject; throws `bad_request`. */
export function validatePublishSubject(subject: unknown): string {
  checkTokens(subject, false);
  return subject as string;
}

/** Validates a subscription subject, which may contain `*` and a final `>`; throws `bad_request`. */
export function validateSubscribeSubject(subject: unknown): string {
  checkTokens(subject, true);
  return subject as string;
}

/** Validates a queue group name (a NATS queue name: no whitespace); throws `bad_request`. */
export function validateQueueGroup(group: unknown): string {
  if (typeof group !== "string" || group.length === 0 || BAD_TOKEN_CHARS.test(group)) {
    throw new TdistError(
      "bad_request",
      `invalid queue group ${JSON.stringify(group)}: must be non-empty without whitespace`,
    );
  }
  return group;
}

/**
 * A compiled subscription subject. Matching follows NATS: `*` matches exactly
 * one token, a final `>` matches one or more remaining tokens.
 */
export class SubjectPattern {
  private readonly tokens: readonly string[];
  private readonly hasWildcard: boolean;

  constructor(readonly subject: string) {
    this.tokens = checkTokens(subject, true);
    this.hasWildcard = this.tokens.some((t) => t === "*" || t === ">");
  }

  matches(subject: string): boolean {
    if (!this.hasWildcard) return subject === this.subject;
    const parts = subject.split(".");
    const { tokens } = this;
    for (let i = 0; i < tokens.length; i++) {
      const token = tokens[i];
      if (token === ">") return parts.length > i;
      if (i >= parts.length) return false;
      if (token !== "*" && token !== parts[i]) return false;
    }
    return parts.length === tokens.length;
  }
}
