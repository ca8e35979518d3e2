/**
 * @tdist/runtime: serve any async generator as a discoverable, routable,
 * streaming endpoint, in one process or across many.
 *
 * ```ts
 * import { DistributedRuntime } from "@tdist/runtime";
 *
 * const runtime = await DistributedRuntime.create();
 * const endpoint = runtime.namespace("tdist").component("hello").endpoint("generate");
 * await endpoint.serve(async function* (text: string) {
 *   for (const word of text.split(" ")) yield word;
 * });
 * const client = await endpoint.client<string, string>();
 * for await (const word of client.generate("hello world")) console.log(word);
 * await runtime.shutdown();
 * ```
 */
export {
  Client,
  type ClientOptions,
  type GenerateOptions,
  type WaitForInstancesOptions,
} from "./client/client.js";
export { type Instance, instanceKey, instanceKeyPrefix } from "./client/instance.js";
export { type Route, routeTo } from "./client/route.js";
export {
  direct,
  leastLoaded,
  type PickContext,
  powerOfTwo,
  type RouterMode,
  type RouterPolicy,
  random,
  roundRobin,
  routerForMode,
  routers,
} from "./client/router-policy.js";
export { Component, Endpoint, Namespace } from "./component.js";
export { declaredEnvVars, declareEnvVars } from "./config/env-registry.js";
export { type EnvVar, enumVar, integerVar, listVar, readEnv, stringVar } from "./config/env-var.js";
export { allEnvVars, Env } from "./config/environment.js";
export { Context } from "./context.js";
export type {
  Discovery,
  KeyValue,
  Lease,
  PrefixWatch,
  PutOptions,
  WatchEvent,
  WatchOptions,
} from "./discovery/discovery.js";
export {
  EtcdDiscovery,
  type EtcdDiscoveryOptions,
} from "./discovery/etcd-discovery.js";
export { MemoryDiscovery, MemoryDiscoveryStore } from "./discovery/memory-discovery.js";
export { ErrorCategories, type ErrorCategory, type ErrorCode, ErrorCodes } from "./errors/error-codes.js";
export { TdistError, type WireError } from "./errors/tdist-error.js";
export {
  DEFAULT_MAX_BUFFERED_EVENTS,
  type EventMessage,
  type EventPlane,
  type EventPlaneOptions,
  type EventSubscription,
  type SubscribeOptions,
} from "./event-plane/event-plane.js";
export {
  EVENT_SUBJECT_ROOT,
  eventSubject,
  namespaceEventSubject,
  namespaceEventsWildcard,
  SubjectPattern,
} from "./event-plane/event-subjects.js";
export { MemoryEventBus, MemoryEventPlane, type MemoryEventPlaneOptions } from "./event-plane/memory-event-plane.js";
export { connectNats, type MonitoredNatsConnection, type NatsConnectOptions } from "./event-plane/nats-connection.js";
export {
  NatsEventPlane,
  type NatsEventPlaneConnectionOptions,
  type NatsEventPlaneOptions,
} from "./event-plane/nats-event-plane.js";
export type { Handler, ResponseStream, StreamOutcome } from "./handler.js";
export {
  isKvTransferFallback,
  type KvChunks,
  type KvFetchOptions,
  type KvOfferOptions,
  type KvOfferOutcome,
  type KvOfferResult,
  type KvOfferState,
  type KvTransferAddress,
  type KvTransferHandle,
  type KvTransferOffer,
  type KvTransferPlane,
  type KvTransferSource,
  type KvTransferStreamSource,
} from "./kv-transfer/kv-transfer.js";
export { type Logger, silentLogger } from "./logger.js";
export { type NameKind, validateName } from "./names.js";
export { type Codec, jsonCodec } from "./request-plane/codec.js";
export type { TransportAddress } from "./request-plane/request-plane.js";
export type { TcpTls, TcpTlsOptions } from "./request-plane/tcp-tls.js";
export {
  DistributedRuntime,
  type RuntimeState,
  type ServedEndpoint,
  type ServeOptions,
  type ShutdownOptions,
} from "./runtime.js";
export {
  type DiscoveryOptions,
  type KvTransferOptions,
  type RequestPlaneOptions,
  type RuntimeOptions,
  resolveRuntimeOptions,
} from "./runtime-options.js";
export { type SignalHandlerOptions, shutdownOnSignals } from "./shutdown-signals.js";
export { delay, withTimeout } from "./util/abort.js";
export { AsyncQueue } from "./util/async-queue.js";
export { mulberry32 } from "./util/seeded-random.js";
export {
  MemoryWorkQueueBroker,
  MemoryWorkQueues,
  type MemoryWorkQueuesOptions,
} from "./work-queue/memory-work-queue.js";
export { NatsWorkQueues, type NatsWorkQueuesOptions, natsWorkQueueNames } from "./work-queue/nats-work-queue.js";
export {
  DEFAULT_ACK_WAIT_MS,
  DEFAULT_MAX_DELIVER,
  type DequeueOptions,
  type WorkItem,
  type WorkQueue,
  type WorkQueueOptions,
  type WorkQueues,
} from "./work-queue/work-queue.js";
