-- umsd schema, version 1.
--
-- Two kinds of tables:
--   * small, mutable registry tables (apps, channels, grants, users, bindings, templates,
--     strategies, lists, segments, callback endpoints): ordinary tables with primary keys;
--   * big, append-mostly history tables (messages, deliveries, delivery_events,
--     provider_refs): range-partitioned by day on their creation time, so that retention
--     is `DROP TABLE <partition>` and vacuum never has to chase deleted history.
-- Partitions are created ahead of time and dropped after `retention.days` by the daemon
-- (see actors/src/store/partitions.rs). Columns that change on the hot path (state,
-- status) are deliberately left unindexed so their updates stay HOT.

CREATE TABLE apps (
    id           integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    app_key      text NOT NULL UNIQUE CHECK (app_key ~ '^[A-Za-z0-9_-]{1,64}$'),
    name         text NOT NULL,
    -- sha256(salt || master_secret); the secret itself is never stored.
    secret_salt  bytea NOT NULL,
    secret_hash  bytea NOT NULL,
    enabled      boolean NOT NULL DEFAULT true,
    -- 'config' rows are owned by the configuration file and rewritten at start.
    source       text NOT NULL DEFAULT 'api' CHECK (source IN ('api', 'config')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE channels (
    code            text PRIMARY KEY CHECK (code ~ '^[A-Za-z0-9_-]{1,32}$'),
    type            text NOT NULL,
    enabled         boolean NOT NULL DEFAULT true,
    rate_per_second double precision,
    burst           integer,
    pool_size       integer,
    -- provider settings including credentials; never returned by the API as-is.
    settings        jsonb NOT NULL DEFAULT '{}'::jsonb,
    source          text NOT NULL DEFAULT 'api' CHECK (source IN ('api', 'config')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE grants (
    app_id       integer NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    channel_code text NOT NULL REFERENCES channels (code) ON DELETE CASCADE,
    -- an app may switch a granted channel off for itself
    enabled      boolean NOT NULL DEFAULT true,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (app_id, channel_code)
);

CREATE TABLE users (
    app_id     integer NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    user_id    text NOT NULL,
    enabled    boolean NOT NULL DEFAULT true,
    locale     text,
    tags       text[] NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (app_id, user_id)
);
CREATE INDEX users_tags_idx ON users USING gin (tags);

CREATE TABLE bindings (
    app_id     integer NOT NULL,
    user_id    text NOT NULL,
    -- phone, email, dingtalk, wecom, feishu, jpush, wechat_openid, alipay, webhook
    type       text NOT NULL,
    value      text NOT NULL,
    -- 'all', 'app' or 'channel:<code>'; the narrowest matching scope wins
    scope      text NOT NULL DEFAULT 'all',
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (app_id, user_id, type, scope),
    FOREIGN KEY (app_id, user_id) REFERENCES users (app_id, user_id) ON DELETE CASCADE
);

CREATE TABLE segments (
    app_id     integer NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    segment_id text NOT NULL,
    user_ids   text[] NOT NULL DEFAULT '{}',
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (app_id, segment_id)
);

CREATE TABLE templates (
    app_id      integer NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    template_id text NOT NULL,
    content     jsonb NOT NULL,
    locales     jsonb NOT NULL DEFAULT '{}'::jsonb,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (app_id, template_id)
);

CREATE TABLE strategies (
    app_id      integer NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    strategy_id text NOT NULL,
    steps       jsonb NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (app_id, strategy_id)
);

CREATE TABLE lists (
    app_id     integer NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    list_id    text NOT NULL,
    kind       text NOT NULL CHECK (kind IN ('blacklist', 'whitelist')),
    entries    text[] NOT NULL DEFAULT '{}',
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (app_id, list_id)
);

CREATE TABLE callback_endpoints (
    app_id      integer NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    url         text NOT NULL,
    is_default  boolean NOT NULL DEFAULT false,
    events      text[] NOT NULL,
    secret      text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (app_id, url)
);

-- One row per accepted send. `id` is umsd's id (time-ordered, see domain/ids.rs), so the
-- creation day, and with it the partition, can be derived from the id alone.
CREATE TABLE messages (
    id          bigint NOT NULL,
    app_id      integer NOT NULL,
    message_id  text,
    -- 0 high, 1 normal, 2 low
    priority    smallint NOT NULL,
    -- 0 scheduled, 1 accepted, 2 dispatching, 3 done, 4 recalled, 5 cancelled
    status      smallint NOT NULL,
    send_at     timestamptz,
    expires_at  timestamptz,
    channels    text[] NOT NULL,
    -- the validated request in canonical form (audience, content, strategy, ...); json,
    -- not jsonb: it is written once and read whole, never queried inside
    request     json NOT NULL,
    created_at  timestamptz NOT NULL
) PARTITION BY RANGE (created_at);
-- One index serves both lookups by id (always within an app) and an app's history newest
-- first (ids are time-ordered); every index is paid for on each accepted message.
CREATE INDEX messages_app_id_idx ON messages (app_id, id);

-- Idempotency keys: narrow, one row per message that carried a `message_id`. Kept as long
-- as the messages they point to (at least 24 h), pruned by time in batches. Rows arrive in
-- time order, so the expired ones sit at the front of the heap and the pruning scan needs
-- no index of its own.
CREATE TABLE message_keys (
    app_id     integer NOT NULL,
    message_id text NOT NULL,
    id         bigint NOT NULL,
    -- sha256 of the canonical request, to tell a replay (same body) from a conflict
    body_hash  bytea NOT NULL,
    -- the status given in the first answer, so a replay answers exactly the same
    status     smallint NOT NULL,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (app_id, message_id)
);

-- Work to do: committed messages the planner has not expanded yet. Rows leave quickly.
CREATE TABLE message_queue (
    id         bigint PRIMARY KEY,
    priority   smallint NOT NULL,
    not_before timestamptz NOT NULL,
    node_id    integer NOT NULL DEFAULT 0
);

-- One (target, channel) attempt and its life cycle.
CREATE TABLE deliveries (
    id           bigint NOT NULL,
    message_pk   bigint NOT NULL,
    app_id       integer NOT NULL,
    channel_code text NOT NULL,
    step         smallint NOT NULL DEFAULT 1,
    user_id      text,
    address      text,
    -- planned, filtered, queued, submitted, failed, delivered, undelivered, clicked, recalled
    state        smallint NOT NULL,
    attempts     smallint NOT NULL DEFAULT 0,
    provider_id  text,
    code         text,
    reason       text,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL
) PARTITION BY RANGE (created_at);
CREATE INDEX deliveries_message_idx ON deliveries (message_pk);
CREATE INDEX deliveries_id_idx ON deliveries (id);

-- Every state change of a delivery, append-only.
CREATE TABLE delivery_events (
    delivery_id bigint NOT NULL,
    message_pk  bigint NOT NULL,
    state       smallint NOT NULL,
    provider_id text,
    code        text,
    reason      text,
    at          timestamptz NOT NULL
) PARTITION BY RANGE (at);
CREATE INDEX delivery_events_delivery_idx ON delivery_events (delivery_id);

-- Provider ids (CMPP Msg_Id, JPush msg_id, ...) → delivery, for receipt correlation.
-- Append-only so that setting a provider id never touches an index on deliveries.
CREATE TABLE provider_refs (
    channel_code text NOT NULL,
    provider_id  text NOT NULL,
    delivery_id  bigint NOT NULL,
    created_at   timestamptz NOT NULL
) PARTITION BY RANGE (created_at);
CREATE INDEX provider_refs_lookup_idx ON provider_refs (channel_code, provider_id);

