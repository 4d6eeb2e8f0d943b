//! The simulator alone: a minimal CMPP 3.0 client in the harness logs in, keeps a window
//! of SUBMITs outstanding per connection, reads the SUBMIT_RESPs and answers the report
//! DELIVERs, so that umsd's figures have a like-for-like reference on the same machine.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::codec::Framed;
use umsd_cmpp::{
    auth, split, ActiveTestResp, CmppCodec, Connect, ConnectResp, DeliverResp, Frame, OctetString,
    Pdu, Submit, Version,
};
use umsd_sim::ismg::{IsmgAccount, IsmgHandle};

use super::buckets::{hdr_buckets, BucketLatency, LATENCY_BUCKETS};
use super::report::AloneResult;
use super::SRC_ID;
use crate::cpu;
use crate::openloop::{self, LatencySummary};
use crate::sims;

/// Longest wait for a login or an answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// What one client connection saw.
struct ConnCounts {
    accepted: u64,
    refused: u64,
    reports: u64,
    hist: Histogram<u64>,
}

/// A SUBMIT like the ones umsd sends: one recipient, the message text as one segment.
fn submit_template(account: &str, dest: &str) -> Result<Submit> {
    let segments = split::split_message(sims::IM_TEXT, &split::SplitOptions::default())
        .map_err(|e| anyhow!("splitting the message: {e}"))?;
    let segment = segments
        .first()
        .ok_or_else(|| anyhow!("the message has no segment"))?;
    // umsd's own template, asking for status reports, with no service id.
    let mut submit = umsd_actors::providers::sms_cmpp::submit_template(account, SRC_ID, "", true);
    submit.dest_terminal_ids = vec![OctetString::from(dest)];
    Ok(submit.with_segment(segment))
}

/// One connection of the client loop: log in, keep `window` SUBMITs outstanding until
/// `until`, then wait for the last answers.
async fn client_loop(addr: SocketAddr, window: usize, until: Instant) -> Result<ConnCounts> {
    let account = IsmgAccount::default_account();
    let stream = tokio::time::timeout(ANSWER_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| anyhow!("connecting to {addr} timed out"))??;
    stream.set_nodelay(true)?;
    let mut framed = Framed::new(stream, CmppCodec::new(Version::V30));
    let ts = auth::timestamp(&chrono::Utc::now());
    let connect = Connect::new(
        account.account.as_str(),
        account.password.as_bytes(),
        Version::V30,
        ts,
    )?;
    framed.send(Frame::new(1, Pdu::Connect(connect))).await?;
    match tokio::time::timeout(ANSWER_TIMEOUT, framed.next()).await {
        Ok(Some(Ok(Frame {
            pdu: Pdu::ConnectResp(r),
            ..
        }))) if r.status == ConnectResp::OK => {}
        Ok(Some(Ok(f))) => bail!("login refused or unexpected answer: {:?}", f.pdu),
        Ok(Some(Err(e))) => bail!("login: {e}"),
        Ok(None) => bail!("login: connection closed"),
        Err(_) => bail!("login: no answer within {ANSWER_TIMEOUT:?}"),
    }
    let template = submit_template(&account.account, "+8613900000000")?;
    let mut c = ConnCounts {
        accepted: 0,
        refused: 0,
        reports: 0,
        hist: openloop::new_histogram()?,
    };
    let mut outstanding: HashMap<u32, Instant> = HashMap::with_capacity(window);
    let mut seq = 1u32;
    loop {
        if Instant::now() < until {
            while outstanding.len() < window {
                seq = seq.wrapping_add(1).max(2);
                framed
                    .feed(Frame::new(seq, Pdu::Submit(template.clone())))
                    .await?;
                outstanding.insert(seq, Instant::now());
            }
        } else if outstanding.is_empty() {
            break;
        }
        SinkExt::<Frame>::flush(&mut framed).await?;
        let frame = match tokio::time::timeout(ANSWER_TIMEOUT, framed.next()).await {
            Ok(Some(Ok(f))) => f,
            Ok(Some(Err(e))) if e.is_recoverable() => continue,
            Ok(Some(Err(e))) => bail!("reading: {e}"),
            Ok(None) => bail!("the simulator closed the connection"),
            Err(_) => bail!(
                "no frame within {ANSWER_TIMEOUT:?} ({} SUBMITs outstanding)",
                outstanding.len()
            ),
        };
        match frame.pdu {
            Pdu::SubmitResp(r) => {
                if let Some(sent) = outstanding.remove(&frame.sequence_id) {
                    let us = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                    c.hist.saturating_record(us.max(1));
                    if r.result == 0 {
                        c.accepted += 1;
                    } else {
                        c.refused += 1;
                    }
                }
            }
            Pdu::Deliver(d) => {
                c.reports += 1;
                let resp = Pdu::DeliverResp(DeliverResp::ok(&d));
                framed.feed(Frame::new(frame.sequence_id, resp)).await?;
            }
            Pdu::ActiveTest => {
                let resp = Pdu::ActiveTestResp(ActiveTestResp::default());
                framed.feed(Frame::new(frame.sequence_id, resp)).await?;
            }
            Pdu::Terminate => bail!("the simulator ended the session"),
            _ => {}
        }
    }
    Ok(c)
}

/// `connections` client loops against `sim` for `duration`.
pub(super) async fn measure_alone(
    sim: &IsmgHandle,
    connections: usize,
    window: usize,
    duration: Duration,
) -> Result<AloneResult> {
    let cpu0 = cpu::own_cpu_time();
    let machine0 = cpu::machine_ticks();
    let t0 = Instant::now();
    let until = t0 + duration;
    let mut set = JoinSet::new();
    for _ in 0..connections {
        set.spawn(client_loop(sim.addr(), window, until));
    }
    let mut hist = openloop::new_histogram()?;
    let (mut accepted, mut refused, mut reports) = (0, 0, 0);
    while let Some(r) = set.join_next().await {
        let c = r.context("client task")?.context("CMPP client loop")?;
        accepted += c.accepted;
        refused += c.refused;
        reports += c.reports;
        hist.add(&c.hist)
            .map_err(|e| anyhow!("merging histograms: {e:?}"))?;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let sim_accepted = sim.stats().submit_resp.get(&0).copied().unwrap_or(0);
    if sim_accepted != accepted {
        bail!("the client counted {accepted} accepted SUBMITs, the simulator {sim_accepted}");
    }
    if accepted == 0 {
        bail!("the simulator accepted nothing alone");
    }
    Ok(AloneResult {
        connections,
        window,
        elapsed_s: elapsed,
        accepted,
        refused,
        reports,
        rate: accepted as f64 / elapsed,
        latency: LatencySummary::of(&hist),
        latency_bucketed: BucketLatency::of(&hdr_buckets(&hist, LATENCY_BUCKETS)),
        harness_cpu_cores: cpu::own_cpu_time().saturating_sub(cpu0).as_secs_f64() / elapsed,
        machine_busy_cores: cpu::machine_busy_cores(machine0, cpu::machine_ticks(), cores),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenarios::cmpp::args::{check_args, CmppArgs};
    use crate::scenarios::cmpp::setup::sim_config;
    use umsd_sim::ismg::{self, IsmgConfig};

    #[test]
    fn submits_look_like_umsds() {
        let s = submit_template("900001", "+8613900000001").unwrap();
        assert_eq!(s.pk_total, 1);
        assert_eq!(s.registered_delivery, 1);
        assert_eq!(s.msg_content, sims::IM_TEXT.as_bytes());
        let mut codec = CmppCodec::new(Version::V30);
        let mut wire = bytes::BytesMut::new();
        tokio_util::codec::Encoder::encode(
            &mut codec,
            Frame::new(2, Pdu::Submit(s.clone())),
            &mut wire,
        )
        .unwrap();
        let back = tokio_util::codec::Decoder::decode(&mut codec, &mut wire)
            .unwrap()
            .unwrap();
        assert_eq!(back.pdu, Pdu::Submit(s));
    }

    #[tokio::test]
    async fn client_loop_against_the_simulator() {
        let a = CmppArgs {
            target: crate::TargetArgs {
                target: None,
                umsd_bin: "x".into(),
                umsd_config: None,
                data_dir: None,
                keep: false,
                port: None,
                ready_timeout_s: 1,
                stop_timeout_s: 1,
                database_url: None,
                umsd_pid: None,
                app_key: "demo".into(),
                app_secret: "s".into(),
                out: None,
                threads: 1,
                max_total_s: 10,
            },
            users: 10,
            messages: 1,
            window: 4,
            sim_seconds: 0.3,
            rate: 500.0,
            rate_window_s: 10.0,
            sim_threads: 1,
            send_concurrency: 1,
            deadline_s: 10,
        };
        assert!(check_args(&a).is_ok());
        let sim = IsmgConfig {
            report_delay_ms: 10,
            ..sim_config(&a)
        };
        let sim = ismg::start(sim).unwrap();
        let r = measure_alone(&sim, 2, a.window, Duration::from_millis(300))
            .await
            .unwrap();
        assert!(r.accepted > 0 && r.refused == 0, "{r:?}");
        assert!(r.reports > 0, "{r:?}");
        assert_eq!(r.latency.count, r.accepted);
        assert_eq!(r.latency_bucketed.count, r.accepted);
        assert!(sim.stats().deliver_resps > 0);
        assert_eq!(sim.stats().malformed, 0);
        tokio::task::spawn_blocking(move || sim.shutdown())
            .await
            .unwrap();
    }
}
