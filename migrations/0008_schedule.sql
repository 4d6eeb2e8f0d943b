-- umsd schema, version 8: scheduled messages wait in a table of their own.
--
-- A message with a future `send_at` used to wait in `message_queue` with a future
-- `not_before`: every planning pass read past all of them (the queue is read in priority
-- order), and nothing could edit or cancel one without racing the planner. Now it waits
-- here, found by its due time; the scheduler moves a due message into `message_queue` and
-- marks it `accepted` in one transaction, and an edit or a cancel locks the row first, so
-- whichever comes first wins and the other sees it gone.

CREATE TABLE message_schedule (
    id       bigint PRIMARY KEY,
    app_id   integer NOT NULL,
    priority smallint NOT NULL,
    due_at   timestamptz NOT NULL,
    node_id  integer NOT NULL DEFAULT 0
);
CREATE INDEX message_schedule_due_idx ON message_schedule (due_at);

-- When a scheduled message was handed to the planner (its lateness is fired_at - send_at).
ALTER TABLE messages ADD COLUMN fired_at timestamptz;

-- Scheduled messages already waiting in the planner's queue move over.
INSERT INTO message_schedule (id, app_id, priority, due_at, node_id)
    SELECT id, app_id, priority, not_before, node_id FROM message_queue
    WHERE not_before > now() AND cursor IS NULL;
DELETE FROM message_queue WHERE not_before > now() AND cursor IS NULL;
