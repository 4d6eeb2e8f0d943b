-- umsd schema, version 2: the delivery engine's working tables.

-- Planning progress of a message whose audience is expanded page by page (tags, segments,
-- broadcast): the last user id planned, so a restart resumes after it.
ALTER TABLE message_queue ADD COLUMN cursor text;
-- The owning app, so the planner reads the message through its (app_id, id) index.
ALTER TABLE message_queue ADD COLUMN app_id integer NOT NULL DEFAULT 0;

-- Work to do for the channel senders: one narrow row per queued delivery, carrying what
-- the sender needs so that pulling work never touches the big deliveries table. A row is
-- deleted in the same transaction that records the delivery's outcome (submitted or
-- failed); rows still here when umsd starts are queued again. Deleted rows are reclaimed
-- by an aggressive autovacuum (the table stays small when the senders keep up).
CREATE TABLE delivery_queue (
    delivery_id  bigint PRIMARY KEY,
    channel_code text NOT NULL,
    priority     smallint NOT NULL,
    message_pk   bigint NOT NULL,
    app_id       integer NOT NULL,
    user_id      text,
    address      text NOT NULL,
    attempts     smallint NOT NULL DEFAULT 0
) WITH (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 1000,
        autovacuum_vacuum_cost_delay = 0);
CREATE INDEX delivery_queue_pull_idx ON delivery_queue (channel_code, priority, delivery_id);

-- The internal inbox channel: one row per inbox delivery. The delivery id is part of the
-- key, so a delivery sent twice (after a crash) is stored once.
CREATE TABLE inbox (
    app_id      integer NOT NULL,
    user_id     text NOT NULL,
    delivery_id bigint NOT NULL,
    message_pk  bigint NOT NULL,
    title       text,
    body        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    read_at     timestamptz,
    PRIMARY KEY (app_id, user_id, delivery_id)
);
