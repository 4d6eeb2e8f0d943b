-- umsd schema, version 6: a delivery's first outcome is kept in its own row.
--
-- The change that takes a delivery out of `queued` (submitted, delivered on acceptance,
-- failed, expired, recalled) happens once per delivery and is by far the most frequent
-- one; it is recorded in these columns by the same UPDATE that sets the state, instead of
-- as a `delivery_events` row. Every later change (receipts, clicks, reads) and every retry
-- is still appended to `delivery_events`. A delivery's life cycle is these columns plus its
-- event rows, ordered by time. Rows written before this version have their first outcome
-- as an event row and these columns NULL.
ALTER TABLE deliveries
    ADD COLUMN sent_state  smallint,
    ADD COLUMN sent_at     timestamptz,
    ADD COLUMN sent_code   text,
    ADD COLUMN sent_reason text;
