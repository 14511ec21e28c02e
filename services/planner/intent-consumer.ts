import { status } from "@grpc/grpc-js";
import type { NatsConnection } from "@nats-io/transport-node";
import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager, type ConsumerMessages } from "@nats-io/jetstream";
import { context } from "@opentelemetry/api";
import { codecOf } from "../../libs/bus/codec.js";
import { ensureIntentStream } from "../../libs/bus/connection.js";
import { INTENT_CONSUMER, INTENT_STREAM } from "../../libs/bus/subjects.js";
import { contextFromHeaders, withMessagingSpan } from "../../libs/bus/trace.js";
import { Intent } from "../../libs/proto/gen/trellis/v1/state.js";
import { IntentOrder, type IntentKey } from "./intent-order.js";
import { applyOnce, errorCode, type IntentOutcome } from "./intents.js";
import type { Planner } from "./planner.js";
import type { PlannerStore } from "./store.js";
import type { IntentKind, PlannerMetrics } from "../../libs/metrics/planner.js";
import { lockKey } from "./keyed-lock.js";
import { takeOverLocks } from "./take-over.js";

const intentCodec = codecOf(Intent);
const RETRY_DELAY_MS = 1000;
/** Intents of the stream applied at once, at most. */
const MAX_IN_FLIGHT = 64;

/**
 * Works off the durable intent stream that controllers publish to; every planner replica consumes through the
 * same durable consumer, so each intent goes to one of them. Each intent is applied once per id
 * (the result is kept in the intents bucket for the controller to read); an intent that failed for a
 * passing reason is redelivered.
 */
export async function consumeIntents(nc: NatsConnection, planner: Planner, store: PlannerStore, retentionMs: number, metrics: PlannerMetrics): Promise<ConsumerMessages> {
  await ensureIntentStream(nc, retentionMs);
  const jsm = await jetstreamManager(nc);
  await jsm.consumers.add(INTENT_STREAM, {
    durable_name: INTENT_CONSUMER,
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.All,
  });
  const consumer = await jetstream(nc).consumers.get(INTENT_STREAM, INTENT_CONSUMER);
  const messages = await consumer.consume();
  const order = new IntentOrder();
  const inFlight = new Set<Promise<void>>();
  void (async () => {
    for await (const message of messages) {
      let intent: Intent;
      try {
        intent = intentCodec.decode(message.data);
      } catch (error) {
        console.error(`ignored intent ${message.seq} of ${INTENT_STREAM}: not an intent (${(error as Error).message})`);
        message.term();
        continue;
      }
      const applied = order
        .run(intentKeys(intent, planner), () =>
          context.with(contextFromHeaders(message.headers), () =>
            withMessagingSpan("process", message.subject, () => applyOnce(store, intent.id, () => measuredIntent(metrics, planner, intent))),
          ),
        )
        .then(
          () => message.ack(),
          (error: unknown) => (isPassing(error) ? message.nak(RETRY_DELAY_MS) : message.ack()),
        )
        .finally(() => inFlight.delete(applied));
      inFlight.add(applied);
      if (inFlight.size >= MAX_IN_FLIGHT) await Promise.race(inFlight);
    }
  })();
  return messages;
}

async function applyIntent(planner: Planner, intent: Intent): Promise<IntentOutcome> {
  const action = intent.action;
  switch (action?.$case) {
    case "createNetwork":
      return { network: await planner.createNetwork(action.value, intent.id) };
    case "deleteNetwork":
      await planner.deleteNetwork(action.value);
      return {};
    case "attachEndpoint":
      return { endpoint: await planner.attachEndpoint(action.value, intent.id) };
    case "detachEndpoint":
      await planner.detachEndpoint(action.value);
      return {};
    case undefined:
      return {};
  }
}

const KINDS: Record<NonNullable<Intent["action"]>["$case"], IntentKind> = {
  createNetwork: "create_network",
  deleteNetwork: "delete_network",
  attachEndpoint: "attach",
  detachEndpoint: "detach",
};

/** An intent with no action does nothing, and is not counted. */
function measuredIntent(metrics: PlannerMetrics, planner: Planner, intent: Intent): Promise<IntentOutcome> {
  const apply = () => applyIntent(planner, intent);
  return intent.action ? metrics.intent(KINDS[intent.action.$case], apply) : apply();
}

/** What an intent touches: a network it changes or uses, and its container. */
function intentKeys(intent: Intent, planner: Planner): IntentKey[] {
  const action = intent.action;
  switch (action?.$case) {
    case "createNetwork":
      return [{ key: lockKey.network(action.value.name), exclusive: true }];
    case "deleteNetwork":
      return [{ key: lockKey.network(action.value), exclusive: true }];
    case "attachEndpoint":
      return [
        { key: lockKey.network(action.value.network), exclusive: false },
        { key: lockKey.container(action.value.container), exclusive: true },
        ...takeOverLocks(action.value).map((key) => ({ key, exclusive: true })),
      ];
    case "detachEndpoint": {
      const network = planner.networkOfContainer(action.value);
      return [
        ...(network ? [{ key: lockKey.network(network), exclusive: false }] : []),
        { key: lockKey.container(action.value), exclusive: true },
      ];
    }
    case undefined:
      return [];
  }
}

function isPassing(error: unknown): boolean {
  const code = errorCode(error);
  return code === status.UNAVAILABLE || code === status.DEADLINE_EXCEEDED || code === status.INTERNAL;
}
