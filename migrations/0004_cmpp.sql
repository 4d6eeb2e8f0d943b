-- umsd schema, version 4: SMS over CMPP.

-- A long SMS goes out as several segments, each with its own provider id (Msg_Id) and its
-- own status report; its delivery is delivered only when every segment is. `parts` is the
-- number of segments of the delivery (1 for every other provider), `outcome` the state a
-- segment's report said (NULL until it comes).
ALTER TABLE provider_refs ADD COLUMN parts smallint NOT NULL DEFAULT 1;
ALTER TABLE provider_refs ADD COLUMN outcome smallint;
CREATE INDEX provider_refs_parts_idx ON provider_refs (delivery_id) WHERE parts > 1;

-- Mobile-originated messages (replies from handsets) received on a channel.
CREATE TABLE mo_messages (
    id           bigserial PRIMARY KEY,
    channel_code text NOT NULL,
    -- the sender's number
    source       text NOT NULL,
    -- the number it was sent to (access number plus any extension)
    destination  text NOT NULL,
    service_id   text NOT NULL,
    content      text NOT NULL,
    -- the gateway's id of the message, so a DELIVER resent by the gateway is stored once
    gateway_id   text NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (channel_code, gateway_id)
);
CREATE INDEX mo_messages_channel_idx ON mo_messages (channel_code, id);
