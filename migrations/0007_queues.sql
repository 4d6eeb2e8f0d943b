-- umsd schema, version 7: the work queues are read in priority order by an index.
--
-- The planner reads the due messages in (priority, id) order, many per pass, and the
-- channel senders list their work in (priority, message) order. With many small messages
-- both queues hold thousands of rows; without these indexes every read sorted them all.

CREATE INDEX message_queue_order_idx ON message_queue (priority, id);
CREATE INDEX dispatch_queue_order_idx ON dispatch_queue (channel_code, priority, message_pk);
