import type { Client, ClientOptions } from "./client/client.js";
import type { Handler } from "./handler.js";
import { validateName } from "./names.js";
import type { DistributedRuntime, ServedEndpoint, ServeOptions } from "./runtime.js";

/** `runtime.namespace("tdist")`: groups components. */
export class Namespace {
  readonly name: string;

  constructor(
    readonly runtime: DistributedRuntime,
    name: string,
  ) {
    this.name = validateName("namespace", name);
  }

  component(name: string): Component {
    return new Component(this, name);
  }
}

/** `namespace.component("backend")`: a deployable unit exposing endpoints. */
export class Component {
  readonly name: string;

  constructor(
    readonly namespace: Namespace,
    name: string,
  ) {
    this.name = validateName("component", name);
  }

  get runtime(): DistributedRuntime {
    return this.namespace.runtime;
  }

  endpoint(name: string): Endpoint {
    return new Endpoint(this, name);
  }

  /** Subject prefix for this component's events on the event plane. */
  get path(): string {
    return `${this.namespace.name}/${this.name}`;
  }
}

/** `component.endpoint("generate")`: serve a handler here, or call it through a client. */
export class Endpoint {
  readonly name: string;

  constructor(
    readonly component: Component,
    name: string,
  ) {
    this.name = validateName("endpoint", name);
  }

  get runtime(): DistributedRuntime {
    return this.component.runtime;
  }

  /** `namespace/component/endpoint`: the request-plane path. */
  get path(): string {
    return `${this.component.namespace.name}/${this.component.name}/${this.name}`;
  }

  /** Registers `handler` as an instance of this endpoint under the runtime's lease. */
  serve<Req, Resp>(handler: Handler<Req, Resp>, options: ServeOptions = {}): Promise<ServedEndpoint> {
    return this.runtime.serveEndpoint(this, handler as Handler, options);
  }

  /** A client that watches this endpoint's instances. */
  client<Req = unknown, Resp = unknown>(options: ClientOptions = {}): Promise<Client<Req, Resp>> {
    return this.runtime.createClient<Req, Resp>(this, options);
  }
}
