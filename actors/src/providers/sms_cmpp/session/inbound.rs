//! What the gateway sends the session: DELIVERs — status reports, handed to the status
//! writer in small batches keyed by the Msg_Id inside the report, and MO messages,
//! reassembled from their parts and stored — each answered with DELIVER_RESP.

use super::*;

impl CmppSession {
    pub(super) fn deliver(&mut self, seq: u32, d: Deliver, ctx: &mut Context<Self>) {
        match &d.content {
            DeliverContent::Report(report) => {
                metrics::counter!(m::CMPP_DELIVERS_TOTAL,
                    "channel" => self.channel(), "kind" => "report")
                .increment(1);
                if !report.is_final() {
                    // ACCEPTD is not an outcome: acknowledge it and wait for the real one.
                    self.write(Frame::new(seq, Pdu::DeliverResp(DeliverResp::ok(&d))));
                    return;
                }
                if let Some(sent) = self.shared.submitted_at(report.msg_id) {
                    metrics::histogram!(m::CMPP_SUBMIT_TO_REPORT_SECONDS, "channel" => self.channel())
                        .record(sent.elapsed().as_secs_f64());
                }
                let stat = report.stat.to_string_lossy().trim().to_owned();
                let delivered = report.is_delivered();
                let event = ReceiptEvent {
                    channel: self.shared.channel.clone(),
                    key: ReceiptKey::Provider(report.msg_id.0.to_string()),
                    state: if delivered {
                        DeliveryState::Delivered
                    } else {
                        DeliveryState::Undelivered
                    },
                    code: Some(stat.clone()),
                    reason: (!delivered).then(|| format!("status report {stat}")),
                    at: Utc::now(),
                };
                self.reports.push((seq, d.msg_id, event));
                if self.reports.len() >= REPORT_BATCH {
                    self.flush_reports(ctx);
                } else if self.reports_flush.is_none() {
                    self.reports_flush = Some(ctx.run_later(REPORT_FLUSH, |act, ctx| {
                        act.reports_flush = None;
                        act.flush_reports(ctx);
                    }));
                }
            }
            DeliverContent::InvalidReport(_) => {
                // Answered so the gateway does not resend it forever; nothing to match.
                tracing::warn!(channel = %self.shared.channel, session = self.id,
                    "a status report with a malformed body was ignored");
                self.write(Frame::new(seq, Pdu::DeliverResp(DeliverResp::ok(&d))));
            }
            DeliverContent::Message(bytes) => {
                metrics::counter!(m::CMPP_DELIVERS_TOTAL,
                    "channel" => self.channel(), "kind" => "mo")
                .increment(1);
                let source = d.src_terminal_id.to_string_lossy().into_owned();
                let text = match self.mo_text(&d, bytes, &source) {
                    Some(t) => t,
                    None => {
                        // A part of a longer message: kept until the rest arrives.
                        self.write(Frame::new(seq, Pdu::DeliverResp(DeliverResp::ok(&d))));
                        return;
                    }
                };
                let mo = Mo {
                    source,
                    destination: d.dest_id.to_string_lossy().into_owned(),
                    service_id: d.service_id.to_string_lossy().into_owned(),
                    content: text,
                    gateway_id: d.msg_id.0.to_string(),
                };
                let shared = self.shared.clone();
                let fut = async move { shared.store_mo(mo).await };
                let generation = self.generation;
                ctx.spawn(
                    actix::fut::wrap_future::<_, Self>(fut).map(move |stored, act, _| {
                        if act.generation != generation {
                            return;
                        }
                        // Not stored: the gateway is asked to send it again later.
                        let mut resp = DeliverResp::ok(&d);
                        if !stored {
                            resp.result = 9;
                        }
                        act.write(Frame::new(seq, Pdu::DeliverResp(resp)));
                    }),
                );
            }
        }
    }

    /// The text of an MO message, or `None` while parts of it are missing.
    pub(super) fn mo_text(&mut self, d: &Deliver, bytes: &[u8], source: &str) -> Option<String> {
        match self
            .mo_parts
            .push_text(source.to_owned(), d.tp_udhi, bytes, d.msg_fmt)
        {
            Ok(text) => text,
            Err(_) => Some(lossy(d, bytes)),
        }
    }

    /// Hands the buffered reports to `Receipts`; each DELIVER is answered once they are
    /// taken (Result 8 when too many receipts are held, so the gateway sends it again).
    pub(super) fn flush_reports(&mut self, ctx: &mut Context<Self>) {
        if let Some(h) = self.reports_flush.take() {
            ctx.cancel_future(h);
        }
        if self.reports.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.reports);
        let (answers, events): (Vec<(u32, MsgId)>, Vec<ReceiptEvent>) =
            batch.into_iter().map(|(s, id, e)| ((s, id), e)).unzip();
        let generation = self.generation;
        let receipts = self.shared.receipts.clone();
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(async move {
                receipts.send(Incoming(events)).await.unwrap_or(false)
            })
            .map(move |taken, act, _| {
                if act.generation != generation {
                    return;
                }
                let result = if taken { 0 } else { SubmitResp::FLOW_CONTROL };
                for (seq, msg_id) in answers {
                    act.write(Frame::new(
                        seq,
                        Pdu::DeliverResp(DeliverResp { msg_id, result }),
                    ));
                }
            }),
        );
    }
}

fn lossy(d: &Deliver, bytes: &[u8]) -> String {
    umsd_cmpp::text::decode(bytes, d.msg_fmt)
        .unwrap_or_else(|_| String::from_utf8_lossy(bytes).into_owned())
}
