-- umsd schema, version 10: fallback strategies at run time.
--
-- A message sent with a strategy keeps the strategy's steps as they were when it was
-- accepted: a strategy edited or deleted later does not change messages under way.
ALTER TABLE messages ADD COLUMN strategy json;

-- `deliveries.step` is the strategy step a delivery belongs to, and NULL for a message
-- sent without a strategy (rows written before this version say 1). Only strategy
-- deliveries are in the index below, which finds a target's deliveries across the steps
-- of its message; messages without a strategy pay nothing for it.
ALTER TABLE deliveries ALTER COLUMN step DROP NOT NULL, ALTER COLUMN step DROP DEFAULT;
CREATE INDEX deliveries_strategy_idx ON deliveries (message_pk, user_id, step)
    WHERE step IS NOT NULL;

-- When a later step went out because this delivery's condition held (no delivery or no
-- click in time). Set by the same conditional update that decides the fallback, so a
-- receipt racing the deadline either lands first (no fallback) or finds this set (a late
-- receipt).
ALTER TABLE deliveries ADD COLUMN fell_back_at timestamptz;

-- Pending strategy deadlines, grouped: one row per (message, later step, batch of
-- deliveries of the step its condition names), due when the condition's time is up for
-- that batch. A million targets planned a thousand per page make a thousand rows. The row
-- is deleted in the transaction that decides every target of its batch, or moved later
-- when some of them cannot be decided yet.
CREATE TABLE strategy_timers (
    id          bigserial PRIMARY KEY,
    message_pk  bigint NOT NULL,
    app_id      integer NOT NULL,
    -- the step this timer may start for the batch's targets (2 or later)
    step        smallint NOT NULL,
    -- the step whose deliveries make up the batch, and their id range
    from_step   smallint NOT NULL,
    first_id    bigint NOT NULL,
    last_id     bigint NOT NULL,
    due_at      timestamptz NOT NULL,
    node_id     integer NOT NULL DEFAULT 0
);
CREATE INDEX strategy_timers_due_idx ON strategy_timers (due_at);
CREATE INDEX strategy_timers_message_idx ON strategy_timers (message_pk, step);

-- What recalling a message did, per channel: deliveries cancelled before they were sent,
-- sent ones the provider withdrew, and sent ones that could not be withdrawn (with why).
CREATE TABLE message_recalls (
    message_pk    bigint NOT NULL,
    channel_code  text NOT NULL,
    cancelled     integer NOT NULL DEFAULT 0,
    recalled      integer NOT NULL DEFAULT 0,
    not_recalled  integer NOT NULL DEFAULT 0,
    -- why sent deliveries could not be withdrawn: reason → count
    reasons       jsonb NOT NULL DEFAULT '{}'::jsonb,
    recalled_at   timestamptz NOT NULL,
    PRIMARY KEY (message_pk, channel_code)
);
