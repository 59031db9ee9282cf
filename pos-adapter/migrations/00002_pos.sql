-- +goose Up

-- Registered terminals. The credential is "hot_<id>_<secret>"; only SHA-256(secret) is kept,
-- so a stolen database does not give working credentials. Revocation is a timestamp, never a
-- delete: acknowledgements and audits keep pointing at the terminal.
CREATE TABLE terminals (
  id              text        PRIMARY KEY,
  name            text        NOT NULL,
  store_ids       text[]      NOT NULL CHECK (cardinality(store_ids) > 0),
  credential_hash bytea       NOT NULL,
  create_time     timestamptz NOT NULL DEFAULT now(),
  revoke_time     timestamptz,
  last_seen_time  timestamptz
);
CREATE INDEX terminals_store_ids ON terminals USING gin (store_ids);

-- One row per store with tickets: the last sequence number given out. Raising a ticket bumps
-- it under the row lock, so a store's tickets commit in sequence order.
CREATE TABLE store_feeds (
  store_id text   PRIMARY KEY,
  last_seq bigint NOT NULL
);

-- Per-store settings.
CREATE TABLE store_settings (
  store_id       text        PRIMARY KEY,
  escalate_after interval,    -- NULL: fulfilment's not_accepted event decides
  update_time    timestamptz NOT NULL DEFAULT now()
);

-- The feed: every ticket ever raised for a store, in order. payload is handoff.pos.v1.Ticket
-- without its sequence (the seq column is the truth).
CREATE TABLE tickets (
  store_id    text        NOT NULL,
  seq         bigint      NOT NULL,
  ticket_id   uuid        NOT NULL UNIQUE,
  kind        text        NOT NULL,
  order_id    text        NOT NULL,
  payload     bytea       NOT NULL,
  create_time timestamptz NOT NULL,
  PRIMARY KEY (store_id, seq)
);
CREATE INDEX tickets_store_time ON tickets (store_id, create_time);
CREATE INDEX tickets_create_time ON tickets (create_time);

-- Who has handled which ticket. reader is a terminal id, or "staff:<subject>" /
-- "admin:<subject>" for a person signed in with a token.
CREATE TABLE ticket_acks (
  reader    text        NOT NULL,
  ticket_id uuid        NOT NULL,
  store_id  text        NOT NULL,
  ack_time  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (reader, ticket_id)
);
CREATE INDEX ticket_acks_ticket ON ticket_acks (ticket_id);

-- Orders waiting to be accepted in stores with their own escalation time.
CREATE TABLE escalation_timers (
  order_id      text        PRIMARY KEY,
  store_id      text        NOT NULL,
  due_time      timestamptz NOT NULL,
  escalate_after interval   NOT NULL,
  order_payload bytea       NOT NULL   -- handoff.fulfilment.v1.Order as confirmed
);
CREATE INDEX escalation_timers_due ON escalation_timers (due_time);

-- Vendor POS endpoints. The signing secret is kept in clear: it is needed to sign.
CREATE TABLE store_webhooks (
  store_id       text        PRIMARY KEY,
  url            text        NOT NULL,
  kinds          text[]      NOT NULL DEFAULT '{}',
  enabled        boolean     NOT NULL,
  signing_secret text        NOT NULL,
  update_time    timestamptz NOT NULL DEFAULT now()
);

-- Outbound deliveries, one per (store, ticket). pending -> delivered | failed (dead letter;
-- ReplayDelivery puts it back to pending) | dropped (webhook disabled or removed).
CREATE TABLE webhook_deliveries (
  id                uuid        PRIMARY KEY,
  store_id          text        NOT NULL,
  ticket_id         uuid        NOT NULL,
  state             text        NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed', 'dropped')),
  attempts          int         NOT NULL DEFAULT 0,
  next_attempt_time timestamptz NOT NULL DEFAULT now(),
  last_error        text        NOT NULL DEFAULT '',
  create_time       timestamptz NOT NULL DEFAULT now(),
  done_time         timestamptz,
  UNIQUE (store_id, ticket_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_time) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_failed ON webhook_deliveries (done_time DESC, id DESC) WHERE state = 'failed';

-- Inbound vendor events, one per (store, vendor event id): the idempotency record. request is
-- the inventory request made for it, sent again unchanged when a retry finds it pending.
CREATE TABLE vendor_events (
  store_id        text        NOT NULL,
  vendor_event_id text        NOT NULL,
  type            text        NOT NULL,
  sku             text        NOT NULL,
  quantity        int         NOT NULL,
  request         bytea       NOT NULL,
  state           text        NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'applied', 'refused')),
  result          text        NOT NULL DEFAULT '',
  receive_time    timestamptz NOT NULL DEFAULT now(),
  done_time       timestamptz,
  PRIMARY KEY (store_id, vendor_event_id)
);

-- +goose Down
DROP TABLE vendor_events;
DROP TABLE webhook_deliveries;
DROP TABLE store_webhooks;
DROP TABLE escalation_timers;
DROP TABLE ticket_acks;
DROP TABLE tickets;
DROP TABLE store_settings;
DROP TABLE store_feeds;
DROP TABLE terminals;
