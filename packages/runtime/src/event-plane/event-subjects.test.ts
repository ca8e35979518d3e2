import { describe, expect, it } from "vitest";
import { TdistError } from "../errors/tdist-error.js";
import {
  eventSubject,
  namespaceEventSubject,
  namespaceEventsWildcard,
  SubjectPattern,
  validatePublishSubject,
  validateSubscribeSubject,
} from "./event-subjects.js";

describe("event subjects", () => {
  it("event subjects - builds namespace and component subjects from validated names", () => {
    expect(eventSubject("dynamo", "backend", "kv_events")).toBe("tdist.ns.dynamo.backend.kv_events");
    expect(namespaceEventSubject("dynamo", "load-metrics")).toBe("tdist.ns.dynamo.load-metrics");
    expect(namespaceEventsWildcard("dynamo")).toBe("tdist.ns.dynamo.>");
    for (const bad of [
      () => eventSubject("Dyn", "b", "t"),
      () => eventSubject("d", "b.c", "t"),
      () => eventSubject("d", "b", "*"),
    ]) {
      expect(bad).toThrow(TdistError);
      try {
        bad();
      } catch (err) {
        expect(TdistError.is(err, "invalid_name")).toBe(true);
      }
    }
  });

  it("event subjects - the namespace wildcard matches both event kinds; '*' keeps token counts apart", () => {
    const all = new SubjectPattern(namespaceEventsWildcard("ns"));
    expect(all.matches(eventSubject("ns", "backend", "kv"))).toBe(true);
    expect(all.matches(namespaceEventSubject("ns", "kv"))).toBe(true);
    expect(all.matches(namespaceEventSubject("other", "kv"))).toBe(false);
    const perComponent = new SubjectPattern("tdist.ns.ns.*.kv");
    expect(perComponent.matches(eventSubject("ns", "backend", "kv"))).toBe(true);
    expect(perComponent.matches(namespaceEventSubject("ns", "kv"))).toBe(false);
  });

  it("event subjects - matches NATS wildcard semantics", () => {
    const cases: [string, string, boolean][] = [
      ["a.b.c", "a.b.c", true],
      ["a.b.c", "a.b", false],
      ["a.*.c", "a.x.c", true],
      ["a.*.c", "a.x.y.c", false],
      ["a.*", "a", false],
      ["a.>", "a", false],
      ["a.>", "a.b", true],
      ["a.>", "a.b.c.d", true],
      [">", "a", true],
      ["*.*", "a.b", true],
      ["*.*", "a.b.c", false],
    ];
    for (const [pattern, subject, expected] of cases) {
      expect(new SubjectPattern(pattern).matches(subject), `${pattern} vs ${subject}`).toBe(expected);
    }
  });

  it("event subjects - rejects malformed subjects with bad_request", () => {
    for (const bad of ["", "a..b", ".a", "a.", "a b", "a.>.b"]) {
      expect(() => validateSubscribeSubject(bad), bad).toThrow(TdistError);
    }
    for (const bad of ["a.*", "a.>", ">"]) expect(() => validatePublishSubject(bad), bad).toThrow(TdistError);
    expect(validateSubscribeSubject("a.*.>")).toBe("a.*.>");
  });
});
