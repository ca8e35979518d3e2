import { describeRequestPlaneSuite } from "../testing/request-plane-suite.js";

describeRequestPlaneSuite("tcp", () => ({ requestPlane: { kind: "tcp", host: "127.0.0.1" } }));
