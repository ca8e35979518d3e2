/**
 * The chaos suite's short form, run with the tests: a frontend and 4 mocker
 * workers as CLI processes on real etcd and NATS, c=8 streams of 200 greedy
 * tokens, checked against an undisturbed run. Needs the CLI built
 * (`packages/cli/dist`).
 */
import { type EtcdServer, type NatsServer, startEtcd, startNats } from "@tdist/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { baselineScenario, chaosScenarios } from "./chaos-scenarios.js";
import { type ChaosLoadSettings, runScenario } from "./run-scenario.js";

const SETTINGS: ChaosLoadSettings = {
  workers: 4,
  concurrency: 8,
  maxTokens: 200,
  requestTimeoutMs: 20_000,
  startTimeoutMs: 20_000,
};
const SCENARIO_BOUND_MS = 45_000;

describe("chaos short", () => {
  let etcd: EtcdServer;
  let nats: NatsServer;
  let baseline: Map<string, string>;
  const runId = Date.now().toString(36);
  const scenario = (name: string) => {
    const spec = chaosScenarios(["mocker"]).find((s) => s.name === name);
    if (spec === undefined) throw new Error(`no scenario ${name}`);
    return spec;
  };

  beforeAll(async () => {
    [etcd, nats] = await Promise.all([startEtcd(), startNats()]);
    const { result, answers } = await runScenario(
      baselineScenario("mocker"),
      { etcd, nats },
      SETTINGS,
      undefined,
      `${runId}-baseline`,
    );
    expect(result.failed).toBe(0);
    baseline = answers;
  }, SCENARIO_BOUND_MS);

  afterAll(async () => {
    await Promise.all([etcd?.stop(), nats?.stop()]);
  });

  it(
    "chaos short - SIGKILL of one mocker worker then another under load: 0 failed, every answer equals the undisturbed run's",
    async () => {
      const { result } = await runScenario(
        scenario("sigkill-two-mocker"),
        { etcd, nats },
        SETTINGS,
        baseline,
        `${runId}-k`,
      );
      expect(result.reasons).toEqual([]);
      expect(result.events).toHaveLength(2);
      expect(result).toMatchObject({ sent: 16, failed: 0, tokensVerified: 16 * SETTINGS.maxTokens });
    },
    SCENARIO_BOUND_MS,
  );

  it(
    "chaos short - with --migration-limit 0 exactly the killed worker's streams fail, each with an OpenAI error event",
    async () => {
      const spec = scenario("sigkill-no-migration-mocker");
      const { result } = await runScenario(spec, { etcd, nats }, SETTINGS, baseline, `${runId}-n`);
      expect(result.reasons).toEqual([]);
      expect(result.failed).toBeGreaterThan(0);
      expect(Object.keys(result.failures).every((ending) => ending.startsWith("error-event"))).toBe(true);
    },
    SCENARIO_BOUND_MS,
  );

  it(
    "chaos short - etcd restarted under load: 0 failed",
    async () => {
      const { result } = await runScenario(
        scenario("restart-etcd-mocker"),
        { etcd, nats },
        SETTINGS,
        baseline,
        `${runId}-e`,
      );
      expect(result.reasons).toEqual([]);
      expect(result).toMatchObject({ sent: 16, failed: 0, tokensVerified: 16 * SETTINGS.maxTokens });
    },
    SCENARIO_BOUND_MS,
  );
});
