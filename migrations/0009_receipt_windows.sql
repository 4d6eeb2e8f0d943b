-- umsd schema, version 9: receipt windows.
--
-- A delivery submitted to a provider that reports delivery waits for its receipt at most
-- the channel's receipt window. Each such delivery gets a row here when it is submitted
-- (in the status write that records it); the status writer takes the rows whose time has
-- come and moves their deliveries from `submitted` to `unknown` (a conditional update: a
-- delivery whose receipt came meanwhile is left alone), then deletes the rows. A narrow
-- queue of its own keeps `deliveries` free of an index on `state`, whose every change
-- would then cost an index update.

CREATE TABLE receipt_waits (
    delivery_id  bigint NOT NULL,
    message_pk   bigint NOT NULL,
    channel_code text NOT NULL,
    due_at       timestamptz NOT NULL
) WITH (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 1000);
CREATE INDEX receipt_waits_due_idx ON receipt_waits (due_at);
