-- umsd schema, version 9: receipt windows.
--
-- A delivery submitted to a provider that reports delivery waits for its receipt at most
-- the channel's receipt window. The status write that records a batch of submissions on a
-- channel also writes one row here naming them, due when their window closes; the status
-- writer takes the rows whose time has come, moves their deliveries from `submitted` to
-- `unknown` (a conditional update: a delivery whose receipt came meanwhile is left alone)
-- and deletes the rows. One row per batch, not per delivery: a busy SMS channel keeps a
-- day of these, and a narrow queue of its own keeps `deliveries` free of an index on
-- `state`, whose every change would then cost an index update.

CREATE TABLE receipt_waits (
    id            bigserial PRIMARY KEY,
    channel_code  text NOT NULL,
    due_at        timestamptz NOT NULL,
    delivery_ids  bigint[] NOT NULL,
    message_pks   bigint[] NOT NULL
);
CREATE INDEX receipt_waits_due_idx ON receipt_waits (due_at);
