-- termshare fleet schema, version 1.
--
-- Applied by the first termshare daemon with [fleet] that finds it missing (inside one
-- transaction, under an advisory lock), or by a DBA with
--   psql -v ON_ERROR_STOP=1 -1 -f migrations/0001_fleet.sql
-- Everything lives in the schema `termshare`. Who may do what is the database's
-- grants (README "Fleet"): hosts write their own rows, operators read, and only a
-- role granted INSERT on termshare.revoke_orders may order a fleet revoke.

CREATE SCHEMA IF NOT EXISTS termshare;

-- Which migrations have been applied.
CREATE TABLE IF NOT EXISTS termshare.schema_version (
    version    integer     PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- One row per host: its daemon's lease, and how far its audit log has been shipped.
CREATE TABLE termshare.hosts (
    host_id     text        PRIMARY KEY CHECK (host_id ~ '^[A-Za-z0-9._-]{1,64}$'),
    -- The daemon run that holds the lease (a new id at every start).
    instance    uuid,
    pid         integer,
    version     text,
    -- This run's start, on the database's clock.
    started_at  timestamptz,
    renewed_at  timestamptz,
    -- The host is shown as unreachable once now() passes this.
    lease_until timestamptz,
    -- Set by a clean stop (its shares have ended); NULL while it runs.
    stopped_at  timestamptz,
    -- Every audit event of this host up to this seq is in termshare.audit_events.
    shipped_seq bigint      NOT NULL DEFAULT 0
);

-- Every audit event of every host: the local log's line as it was written (event),
-- and its main fields as columns to filter on. (host_id, seq) makes a re-send a no-op.
CREATE TABLE termshare.audit_events (
    host_id        text        NOT NULL,
    seq            bigint      NOT NULL,
    id             uuid        NOT NULL,
    at             timestamptz NOT NULL,
    kind           text        NOT NULL,
    correlation_id uuid        NOT NULL,
    principal      text,
    terminal       text,
    backend        text,
    event          jsonb       NOT NULL,
    shipped_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (host_id, seq)
);
CREATE INDEX audit_events_at ON termshare.audit_events (at);
CREATE INDEX audit_events_correlation ON termshare.audit_events (correlation_id);
CREATE INDEX audit_events_share ON termshare.audit_events ((event -> 'details' ->> 'share_id'));

-- Each host's live shares, kept by its daemon on every lifecycle change. Trust a row
-- only while its host's lease runs (termshare fleet list shows the rest as unreachable).
CREATE TABLE termshare.live_shares (
    host_id      text        NOT NULL REFERENCES termshare.hosts ON DELETE CASCADE,
    share_id     uuid        NOT NULL,
    principal    text        NOT NULL,
    terminal     text        NOT NULL,
    backend      text        NOT NULL,
    access       text        NOT NULL,
    -- starting | active | expiring | ending
    state        text        NOT NULL,
    -- NULL: the backend does not tell.
    participants integer,
    started_at   timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (host_id, share_id)
);
CREATE INDEX live_shares_principal ON termshare.live_shares (principal);

-- Fleet revoke orders: every daemon ends the matching shares it has when it learns of
-- an order (NOTIFY termshare_revoke_orders, and a catch-up read on reconnect). The
-- criteria combine with AND; at least one is given.
CREATE TABLE termshare.revoke_orders (
    order_id   uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    ordered_at timestamptz NOT NULL DEFAULT now(),
    -- The role that inserted the order (set by the trigger below, not by the client).
    ordered_by text        NOT NULL DEFAULT session_user,
    principal  text,
    host_id    text,
    share_id   uuid,
    reason     text,
    CHECK (principal IS NOT NULL OR host_id IS NOT NULL OR share_id IS NOT NULL)
);

-- What each host did with each share an order matched.
CREATE TABLE termshare.revoke_outcomes (
    order_id  uuid        NOT NULL REFERENCES termshare.revoke_orders ON DELETE CASCADE,
    host_id   text        NOT NULL,
    share_id  uuid        NOT NULL,
    principal text        NOT NULL,
    -- revoked | already_ended | failed
    outcome   text        NOT NULL,
    -- The revoke report (elapsed_ms, deadline_met, ...) or the error.
    detail    jsonb       NOT NULL,
    at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (order_id, host_id, share_id)
);

-- A host has carried out an order (its outcomes are all written).
CREATE TABLE termshare.revoke_acks (
    order_id uuid        NOT NULL REFERENCES termshare.revoke_orders ON DELETE CASCADE,
    host_id  text        NOT NULL,
    matched  integer     NOT NULL,
    at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (order_id, host_id)
);

-- Who ordered and when is the database's word, whatever the client sent.
CREATE FUNCTION termshare.stamp_revoke_order() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.ordered_by := session_user;
    NEW.ordered_at := now();
    RETURN NEW;
END $$;
CREATE TRIGGER revoke_orders_stamp BEFORE INSERT ON termshare.revoke_orders
    FOR EACH ROW EXECUTE FUNCTION termshare.stamp_revoke_order();

-- Tell every listening daemon of a new order, and the ordering command of each ack.
CREATE FUNCTION termshare.notify_revoke() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(TG_ARGV[0], NEW.order_id::text);
    RETURN NULL;
END $$;
CREATE TRIGGER revoke_orders_notify AFTER INSERT ON termshare.revoke_orders
    FOR EACH ROW EXECUTE FUNCTION termshare.notify_revoke('termshare_revoke_orders');
CREATE TRIGGER revoke_acks_notify AFTER INSERT ON termshare.revoke_acks
    FOR EACH ROW EXECUTE FUNCTION termshare.notify_revoke('termshare_revoke_acks');

INSERT INTO termshare.schema_version (version) VALUES (1);
