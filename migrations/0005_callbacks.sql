-- umsd schema, version 5: pushing events to the apps' callback URLs.

-- Events waiting to be posted to an app's callback endpoint (`callback_endpoints`). A row
-- is written in the same transaction as what it reports, claimed by a node for a while
-- (`next_at` moved ahead) while it is posted, and deleted once the endpoint answered 2xx;
-- a failed post moves `next_at` by an exponential backoff.
CREATE TABLE callback_outbox (
    id          bigserial PRIMARY KEY,
    app_id      integer NOT NULL,
    url         text NOT NULL,
    -- the event's id (`webhook-id`), stable across attempts so receivers can drop repeats
    event_id    text NOT NULL,
    body        text NOT NULL,
    attempts    smallint NOT NULL DEFAULT 0,
    next_at     timestamptz NOT NULL DEFAULT now(),
    created_at  timestamptz NOT NULL DEFAULT now()
) WITH (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 1000);
CREATE INDEX callback_outbox_due_idx ON callback_outbox (next_at);
