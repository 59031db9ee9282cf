// The browser shopper: lists products, fills a cart, checks out and watches the order live,
// all over gRPC-web to Handoff's gateway (a different origin: CORS), with the shopper's token
// from the query string. What it sees goes into the page and into window.results, which the
// browser test reads.
import { createClient, ConnectError, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { GrpcWebClientBase, MethodDescriptor, MethodType, type RpcError } from "grpc-web";
import { money } from "./money";
import { CatalogService } from "./gen/handoff/catalog/v1/catalog_pb";
import { StoreLocatorService } from "./gen/handoff/inventory/v1/inventory_pb";
import { CartService } from "./gen/handoff/cart/v1/cart_pb";
import {
  OrderService,
  OrderState,
  WatchOrderRequestSchema,
  WatchOrderResponseSchema,
  type Order,
  type WatchOrderRequest,
  type WatchOrderResponse,
} from "./gen/handoff/fulfilment/v1/order_pb";

interface Update {
  state: string;
  from?: string;
  to?: string;
  actor?: string;
  time?: string;
}

interface Results {
  products: string[];
  store?: { id: string; name: string; distanceMeters: number };
  cartId?: string;
  order?: { id: string; state: string; storeId: string; pickupCode: string; total: string };
  updates: Update[];
  // The states the same order showed through the official gRPC-Web client, in its text mode.
  textModeStates: string[];
  finalState?: string;
  done: boolean;
  error?: string;
}

declare global {
  interface Window {
    results: Results;
  }
}

const results: Results = { products: [], updates: [], textModeStates: [], done: false };
window.results = results;

const params = new URLSearchParams(location.search);
const gateway = params.get("gateway") ?? "http://127.0.0.1:8080";
const token = params.get("token") ?? "";
const sku = params.get("sku") ?? "LATTE-16";
const latitude = Number(params.get("lat") ?? "47.6145");
const longitude = Number(params.get("lng") ?? "-122.3210");

const logList = document.getElementById("log")!;
function log(text: string, cls = ""): void {
  const li = document.createElement("li");
  li.textContent = `${new Date().toISOString().slice(11, 23)}  ${text}`;
  if (cls) li.className = cls;
  logList.append(li);
}

const bearer: Interceptor = (next) => (req) => {
  if (token) req.header.set("Authorization", `Bearer ${token}`);
  return next(req);
};
const transport = createGrpcWebTransport({ baseUrl: gateway, interceptors: [bearer] });
const catalog = createClient(CatalogService, transport);
const locator = createClient(StoreLocatorService, transport);
const carts = createClient(CartService, transport);
const orders = createClient(OrderService, transport);

const stateName = (s: OrderState): string => OrderState[s] ?? String(s);
const final = new Set([OrderState.COLLECTED, OrderState.REJECTED, OrderState.CANCELLED, OrderState.EXPIRED]);

function showOrder(o: Order): void {
  results.order = { id: o.id, state: stateName(o.state), storeId: o.storeId, pickupCode: o.pickupCode, total: money(o.total) };
  document.getElementById("order")!.textContent =
    `${o.id}: ${stateName(o.state)} at ${o.storeName || "?"}, total ${money(o.total)}, pickup code ${o.pickupCode || "-"}`;
}

// watchInTextMode watches the order with the official gRPC-Web client (grpc-web on npm) in its
// default mode, application/grpc-web-text, as an app built with protoc-gen-grpc-web does; the
// messages are the protobuf-es ones, serialized by hand where such an app's generated code
// would. It resolves when the order reaches a final state.
function watchInTextMode(orderId: string): Promise<void> {
  const client = new GrpcWebClientBase({ format: "text" });
  const path = `/${OrderService.typeName}/${OrderService.method.watchOrder.name}`;
  const method = new MethodDescriptor<WatchOrderRequest, WatchOrderResponse>(
    path,
    MethodType.SERVER_STREAMING,
    Object as never,
    Object as never,
    (req: WatchOrderRequest) => toBinary(WatchOrderRequestSchema, req),
    (bytes: Uint8Array) => fromBinary(WatchOrderResponseSchema, bytes),
  );
  return new Promise((resolve, reject) => {
    const stream = client.serverStreaming(gateway + path, create(WatchOrderRequestSchema, { orderId }), { Authorization: `Bearer ${token}` }, method);
    stream.on("data", (msg: WatchOrderResponse) => {
      if (!msg.order) return;
      results.textModeStates.push(stateName(msg.order.state));
      if (final.has(msg.order.state)) resolve();
    });
    stream.on("error", (err: RpcError) => reject(new Error(`grpc-web text-mode WatchOrder: code ${err.code}: ${err.message}`)));
    stream.on("end", () => resolve());
  });
}

async function shop(): Promise<void> {
  const list = await catalog.listProducts({ pageSize: 20 });
  const ul = document.getElementById("products")!;
  for (const p of list.products) {
    results.products.push(p.name);
    const li = document.createElement("li");
    li.textContent = `${p.name} — ${p.variants.map((v) => `${v.name} ${money(v.price)}`).join(", ")}`;
    ul.append(li);
  }
  log(`ListProducts: ${list.products.length} products`);

  const found = await locator.findStores({
    location: { latitude, longitude },
    lines: [{ sku, quantity: 1 }],
    onlyFulfillable: true,
    maxResults: 1,
  });
  const match = found.stores[0];
  if (!match?.store) throw new Error(`no open store near ${latitude},${longitude} has ${sku}`);
  results.store = { id: match.store.id, name: match.store.name, distanceMeters: match.distanceMeters };
  log(`FindStores: ${match.store.name} at ${(match.distanceMeters / 1000).toFixed(2)} km has ${sku}`);

  const { cart } = await carts.createCart({});
  if (!cart) throw new Error("CreateCart returned no cart");
  results.cartId = cart.id;
  await carts.addLine({ cartId: cart.id, sku, quantity: 1 });
  const picked = await carts.setPickup({ cartId: cart.id, pickup: { choice: { case: "storeId", value: match.store.id } } });
  log(`cart ${cart.id}: 1 × ${sku}, pickup at ${match.store.id}`);

  // The order charges the subtotal shown, or is refused (a price changed meanwhile).
  const checkout = await carts.checkout({
    cartId: cart.id,
    idempotencyKey: `browser-${crypto.randomUUID()}`,
    expectedSubtotal: picked.cart?.subtotal,
  });
  if (!checkout.order) throw new Error("Checkout returned no order");
  showOrder(checkout.order);
  log(`Checkout: order ${checkout.order.id} ${stateName(checkout.order.state)}`);

  const textMode = watchInTextMode(checkout.order.id);
  for await (const msg of orders.watchOrder({ orderId: checkout.order.id })) {
    if (!msg.order) continue;
    showOrder(msg.order);
    const t = msg.transition;
    const update: Update = { state: stateName(msg.order.state) };
    if (t) {
      update.from = stateName(t.fromState);
      update.to = stateName(t.toState);
      update.actor = t.actor ? `${t.actor.kind}:${t.actor.id}` : undefined;
      update.time = t.time ? timestampDate(t.time).toISOString() : undefined;
      log(`WatchOrder: ${update.from} → ${update.to}`);
    } else {
      log(`WatchOrder: ${update.state} (as the stream opened)`);
    }
    results.updates.push(update);
    if (final.has(msg.order.state)) {
      results.finalState = update.state;
      break;
    }
  }
  await textMode;
  log(`WatchOrder in gRPC-web text mode (grpc-web): ${results.textModeStates.join(" → ")}`);
}

shop()
  .catch((err: unknown) => {
    const e = ConnectError.from(err);
    results.error = `${e.code}: ${e.rawMessage}`;
    log(`error: ${results.error}`, "error");
  })
  .finally(() => {
    results.done = true;
  });
