-- umsd schema, version 3: senders' work per (message, channel) instead of per delivery.
--
-- A queue row per delivery cost an insert, a pull and a delete per delivery (and their
-- index maintenance and vacuum). Instead, a sender's work is one row per message and
-- channel; the sender reads the message's queued deliveries from `deliveries` itself
-- (`state = queued`, by message and delivery id), and deletes the row once none is left.

DROP TABLE delivery_queue;

CREATE TABLE dispatch_queue (
    channel_code text NOT NULL,
    message_pk   bigint NOT NULL,
    priority     smallint NOT NULL,
    app_id       integer NOT NULL,
    -- pages of deliveries planned for it so far: a sender deletes the row only if no page
    -- was added since it last looked
    pages        integer NOT NULL DEFAULT 1,
    PRIMARY KEY (channel_code, message_pk)
) WITH (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 1000,
        autovacuum_vacuum_cost_delay = 0);

-- Deliveries are found by message (and, in a message, from a delivery id on): the sender's
-- pulls, status writes, the funnel and the deliveries listing all know the message. A
-- separate index on the delivery id alone is no longer needed.
DROP INDEX deliveries_message_idx;
DROP INDEX deliveries_id_idx;
CREATE INDEX deliveries_message_idx ON deliveries (message_pk, id);

-- Receipts find their delivery through its provider id; with the message they reach it
-- through the index above.
ALTER TABLE provider_refs ADD COLUMN message_pk bigint NOT NULL DEFAULT 0;
