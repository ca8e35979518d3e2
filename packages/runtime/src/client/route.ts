import type { StreamOutcome } from "../handler.js";
import type { Instance } from "./instance.js";

/**
 * What a routing policy decided for one request: the instance, what the
 * policy wants the caller to know (`decision`, e.g. the KV router's cached
 * blocks), and the hooks that keep a policy's own bookkeeping true.
 * `Client.generate` drives the hooks:
 *
 * - `onFirstResponse()`: at most once, when the first response item is
 *   handed to the caller, and never after `release`;
 * - `release(outcome)`: exactly once, however the stream ends (completed,
 *   failed, cancelled by the caller, or never connected).
 *
 * A route belongs to one request, so the hooks close over what the policy
 * recorded for it; nothing needs to find the request again later.
 *
 * ```ts
 * const counting: RouterPolicy = {
 *   name: "counting",
 *   pick(instances) {
 *     const instance = instances[0];
 *     if (instance === undefined) return undefined;
 *     open++;
 *     return { instance, release: () => open-- };
 *   },
 * };
 * ```
 */
export interface Route<D = unknown> {
  readonly instance: Instance;
  readonly decision?: D;
  onFirstResponse?(): void;
  release?(outcome: StreamOutcome): void;
}

/** The route of a policy with nothing to track per request. */
export function routeTo(instance: Instance): Route;
export function routeTo(instance: Instance | undefined): Route | undefined;
export function routeTo(instance: Instance | undefined): Route | undefined {
  return instance === undefined ? undefined : { instance };
}
