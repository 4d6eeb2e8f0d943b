//! SMS over CMPP, end to end: umsd's `sms_cmpp` channel against the ISMG simulator over
//! real TCP on loopback.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use umsd_sim::ismg::{self, IsmgConfig, IsmgFaults, IsmgHandle};

use crate::{TestApp, ADMIN, DEMO};

/// Each test its own channel code: metrics are process-wide and tests run side by side.
static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);

pub(crate) struct Rig {
    pub(crate) app: TestApp,
    pub(crate) sim: IsmgHandle,
    pub(crate) code: String,
}

/// Channel settings pointing at `sim`, with `extra` merged in.
pub(crate) fn settings(sim: &IsmgHandle, extra: Value) -> Value {
    let mut s = json!({
        "host": "127.0.0.1", "port": sim.addr().port(), "account": "900001",
        "password": "888888", "version": "3.0", "src_id": "10690001", "service_id": "umsd",
        "max_connections": 2, "window": 16, "heartbeat_seconds": 180,
        "response_timeout_seconds": 2, "tries": 3, "signature": "【umsd】",
        "reconnect_min_ms": 100, "reconnect_max_ms": 1000,
    });
    if let (Some(s), Some(extra)) = (s.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            s.insert(k.clone(), v.clone());
        }
    }
    s
}

impl Rig {
    pub(crate) async fn new(sim: IsmgConfig, channel: Value) -> Rig {
        let app = TestApp::spawn().await;
        let code = format!(
            "cmpp{}",
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let sim = ismg::start(sim).unwrap();
        let mut body = json!({"type": "sms_cmpp", "settings": settings(&sim, channel.clone())});
        if let Some(rate) = channel.get("rate_per_second") {
            body["rate_per_second"] = rate.clone();
            body["settings"]
                .as_object_mut()
                .unwrap()
                .remove("rate_per_second");
        }
        let shown = crate::channels::add_channel(&app, &code, &body).await;
        assert!(shown["settings"].get("password").is_none(), "{shown}");
        Rig { app, sim, code }
    }

    pub(crate) async fn users(&self, n: usize) -> Vec<String> {
        let mut users = Vec::new();
        let rows: Vec<Value> = (0..n)
            .map(|i| {
                let id = format!("p{i}");
                users.push(id.clone());
                json!({"user_id": id, "bindings": [{"type": "phone",
                        "value": format!("+86139{i:08}")}]})
            })
            .collect();
        for chunk in rows.chunks(1000) {
            let (status, body) = self
                .app
                .post_as(DEMO, "/v1/users/batch", &json!({"users": chunk}))
                .await;
            assert!(status.is_success(), "{body}");
        }
        users
    }

    pub(crate) async fn send(&self, users: &[String], text: &str) -> String {
        let (status, sent) = self
            .app
            .send(&json!({
                "audience": {"user_ids": users},
                "channels": [&self.code],
                "content": {&self.code: {"text": text}},
            }))
            .await;
        assert_eq!(status, 202, "{sent}");
        sent["id"].as_str().unwrap().to_owned()
    }

    /// Waits until every delivery of the message is final; returns them.
    pub(crate) async fn settled(&self, id: &str, seconds: u64) -> Vec<Value> {
        self.app
            .wait_for(&format!("/v1/messages/{id}"), seconds, |m| {
                m["status"] == "done"
            })
            .await;
        let mut all = Vec::new();
        let mut cursor = String::new();
        loop {
            let (_, d) = self
                .app
                .get(&format!(
                    "/v1/messages/{id}/deliveries?limit=1000{}",
                    if cursor.is_empty() {
                        String::new()
                    } else {
                        format!("&cursor={cursor}")
                    }
                ))
                .await;
            all.extend(d["deliveries"].as_array().unwrap().iter().cloned());
            match d["next_cursor"].as_str() {
                Some(c) => cursor = c.to_owned(),
                None => break,
            }
        }
        all
    }
}

pub(crate) fn sim_config() -> IsmgConfig {
    IsmgConfig {
        report_delay_ms: 50,
        ..IsmgConfig::default()
    }
}

/// Whether `ok` comes to hold within `seconds`.
async fn until(seconds: u64, mut ok: impl FnMut() -> bool) -> bool {
    crate::poll(Duration::from_secs(seconds), || {
        std::future::ready(if ok() { Ok(()) } else { Err(()) })
    })
    .await
    .is_ok()
}

/// Whether the `/metrics` text has the line `line`.
async fn has_metric(app: &TestApp, line: &str) -> bool {
    app.metrics().await.lines().any(|l| l == line)
}

#[actix_web::test]
async fn sms_is_delivered_with_its_report_over_cmpp_2_0_and_3_0() {
    for version in ["2.0", "3.0"] {
        let rig = Rig::new(sim_config(), json!({"version": version})).await;
        let users = rig.users(3).await;
        let id = rig.send(&users, "Your code is 1234").await;
        let ds = rig.settled(&id, 30).await;
        assert_eq!(ds.len(), 3);
        for d in &ds {
            assert_eq!(d["state"], "delivered", "{version}: {d}");
            assert_eq!(d["code"], "DELIVRD", "{version}: {d}");
            let pid = d["provider_id"].as_str().unwrap();
            assert!(pid.parse::<u64>().is_ok(), "{pid}");
        }
        let got = rig.sim.messages();
        assert_eq!(got.len(), 3, "{version}");
        for m in &got {
            assert_eq!(m.text.as_deref(), Some("【umsd】Your code is 1234"));
            assert_eq!(m.parts, 1);
            assert_eq!(m.src_id, "10690001");
        }
        let conns = rig.sim.connections();
        assert_eq!(conns.len(), 2, "{version}: two sessions");
        let stats = rig.sim.stats();
        assert_eq!(stats.deliver_resps, 3, "{version}: every report answered");
        assert_eq!(stats.deliver_resp_mismatches, 0);
        // Every stage reports.
        let metrics = rig.app.metrics().await;
        let c = &rig.code;
        for line in [
            format!(r#"umsd_cmpp_sessions{{channel="{c}",state="ready"}} 2"#),
            format!(r#"umsd_cmpp_window_in_flight{{channel="{c}"}} 0"#),
            format!(r#"umsd_cmpp_submits_total{{channel="{c}",result="0"}} 3"#),
            format!(r#"umsd_cmpp_submit_resp_seconds_count{{channel="{c}"}} 3"#),
            format!(r#"umsd_cmpp_submit_to_report_seconds_count{{channel="{c}"}} 3"#),
            format!(r#"umsd_cmpp_delivers_total{{channel="{c}",kind="report"}} 3"#),
            format!(r#"umsd_receipts_total{{channel="{c}",kind="delivered"}} 3"#),
        ] {
            assert!(
                metrics.contains(&line),
                "{version}: no {line} in\n{metrics}"
            );
        }
        rig.app.stop().await;
        // Closing the channel says TERMINATE on each session.
        assert!(until(5, || rig.sim.stats().terminates_received >= 2).await);
    }
}

#[actix_web::test]
async fn a_long_chinese_message_arrives_whole_and_is_delivered_after_every_part() {
    let text = format!("{}🙂{}", "您的订单已发货。".repeat(10), "谢谢！".repeat(10));
    let rig = Rig::new(sim_config(), json!({})).await;
    let users = rig.users(1).await;
    let id = rig.send(&users, &text).await;
    let ds = rig.settled(&id, 30).await;
    assert_eq!(ds[0]["state"], "delivered", "{}", ds[0]);
    let parts: Vec<&str> = ds[0]["provider_id"].as_str().unwrap().split(',').collect();
    let got = rig.sim.messages();
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].text.as_deref(),
        Some(format!("【umsd】{text}").as_str())
    );
    assert_eq!(got[0].parts as usize, parts.len());
    assert!(parts.len() >= 2);
    let ids: Vec<String> = got[0].msg_ids.iter().map(|m| m.0.to_string()).collect();
    assert_eq!(ids, parts);
    rig.app.stop().await;

    // One part undelivered: the delivery is undelivered with that part's status.
    let rig = Rig::new(
        IsmgConfig {
            stats: [("UNDELIV".to_owned(), 1)].into_iter().collect(),
            ..sim_config()
        },
        json!({}),
    )
    .await;
    let users = rig.users(1).await;
    let id = rig.send(&users, &text).await;
    let ds = rig.settled(&id, 30).await;
    assert_eq!(ds[0]["state"], "undelivered", "{}", ds[0]);
    assert_eq!(ds[0]["code"], "UNDELIV");
    rig.app.stop().await;
}

/// A delivery sent in parts moves only when every part's report is in, or one failed.
#[actix_web::test]
async fn a_delivery_in_parts_waits_for_every_part_s_report() {
    let text = "您的订单已发货，预计明天送达。".repeat(12);
    let rig = Rig::new(
        IsmgConfig {
            // The drawn reports never come during the test; it sends them itself.
            report_delay_ms: 600_000,
            ..IsmgConfig::default()
        },
        json!({}),
    )
    .await;
    let users = rig.users(2).await;
    let id = rig.send(&users, &text).await;
    let d = rig
        .app
        .wait_for(&format!("/v1/messages/{id}/deliveries"), 10, |d| {
            let ds = d["deliveries"].as_array().unwrap();
            ds.len() == 2 && ds.iter().all(|d| d["state"] == "submitted")
        })
        .await;
    let parts: Vec<Vec<u64>> = d["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            d["provider_id"]
                .as_str()
                .unwrap()
                .split(',')
                .map(|p| p.parse().unwrap())
                .collect()
        })
        .collect();
    assert_eq!(parts.len(), 2, "not submitted");
    let n = parts[0].len();
    assert!(n >= 3, "{parts:?}");
    // Every part but the last delivered: still submitted.
    for p in &parts[0][..n - 1] {
        assert!(rig.sim.send_report(umsd_cmpp::MsgId(*p), "DELIVRD"));
    }
    // The same report twice changes nothing.
    assert!(rig
        .sim
        .send_report(umsd_cmpp::MsgId(parts[0][0]), "DELIVRD"));
    assert!(until(5, || rig.sim.stats().deliver_resps >= n as u64).await);
    // The receipts are counted once the status writes they led to are done.
    let counted = format!(
        r#"umsd_receipts_total{{channel="{}",kind="part"}} {n}"#,
        rig.code
    );
    crate::eventually(5, &counted, || async {
        has_metric(&rig.app, &counted)
            .await
            .then_some(())
            .ok_or("not yet")
    })
    .await;
    let (_, d) = rig.app.get(&format!("/v1/messages/{id}/deliveries")).await;
    let first = d["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["user_id"] == users[0].as_str())
        .unwrap()
        .clone();
    assert_eq!(first["state"], "submitted", "{first}");
    assert!(rig
        .sim
        .send_report(umsd_cmpp::MsgId(parts[0][n - 1]), "DELIVRD"));
    // One part of the other delivery failed: undelivered at once, with its status.
    assert!(rig
        .sim
        .send_report(umsd_cmpp::MsgId(parts[1][1]), "EXPIRED"));
    let ds = rig.settled(&id, 20).await;
    let by = |i: usize| {
        ds.iter()
            .find(|d| d["user_id"] == users[i].as_str())
            .unwrap()
            .clone()
    };
    assert_eq!(by(0)["state"], "delivered", "{}", by(0));
    assert_eq!(by(0)["code"], "DELIVRD");
    assert_eq!(by(1)["state"], "undelivered", "{}", by(1));
    assert_eq!(by(1)["code"], "EXPIRED");
    let metrics = rig.app.metrics().await;
    assert!(
        metrics.contains(&format!(
            r#"umsd_receipts_total{{channel="{}",kind="part"}} {}"#,
            rig.code,
            n + 2
        )),
        "{metrics}"
    );
    rig.app.stop().await;
}

#[actix_web::test]
async fn wrong_credentials_are_reported_and_never_hot_looped() {
    let rig = Rig::new(
        sim_config(),
        json!({"password": "wrong", "refused_login_backoff_seconds": 60}),
    )
    .await;
    assert!(
        until(10, || rig
            .sim
            .stats()
            .logins_refused
            .get(&3)
            .copied()
            .unwrap_or(0)
            >= 2)
        .await
    );
    // Nothing shows that a session is not coming back, so this waits a fixed time: one
    // that hot-looped would log in again within reconnect_max_ms (1 s, +20 % jitter) of
    // its refusal, and 2 s leaves room for that login's round trip.
    tokio::time::sleep(Duration::from_secs(2)).await;
    // One refusal per session, then a long backoff.
    assert_eq!(rig.sim.stats().logins_refused.get(&3).copied(), Some(2));
    let (status, ready) = rig.app.get("/readyz").await;
    assert_eq!(status, 200, "{ready}");
    let problem = ready["channel_problems"][&rig.code]
        .as_str()
        .unwrap_or_default();
    assert!(problem.contains("status 3"), "{ready}");
    let channel: Value = rig
        .app
        .http
        .get(rig.app.url(&format!("/admin/channels/{}", rig.code)))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(channel["state"]["sender"]["problem"], problem, "{channel}");
    let metrics = rig.app.metrics().await;
    assert!(
        metrics.contains(&format!(
            r#"umsd_cmpp_login_failures_total{{channel="{}",status="3"}} 2"#,
            rig.code
        )),
        "{metrics}"
    );
    rig.app.stop().await;
}

#[actix_web::test]
async fn sessions_beyond_the_gateway_s_limit_are_refused_and_the_rest_deliver() {
    let rig = Rig::new(
        IsmgConfig {
            max_connections: 1,
            ..sim_config()
        },
        json!({"max_connections": 2}),
    )
    .await;
    let users = rig.users(20).await;
    let id = rig.send(&users, "hello").await;
    let ds = rig.settled(&id, 30).await;
    assert!(ds.iter().all(|d| d["state"] == "delivered"));
    assert!(rig.sim.stats().logins_refused.get(&5).copied().unwrap_or(0) >= 1);
    rig.app.stop().await;
}

#[actix_web::test]
async fn flow_control_slows_the_account_down_and_everything_is_delivered() {
    let rig = Rig::new(
        IsmgConfig {
            rate_per_second: Some(100),
            ..sim_config()
        },
        json!({}),
    )
    .await;
    let users = rig.users(300).await;
    let id = rig.send(&users, "hello").await;
    let ds = rig.settled(&id, 60).await;
    assert_eq!(ds.len(), 300);
    assert!(ds.iter().all(|d| d["state"] == "delivered"));
    let stats = rig.sim.stats();
    assert!(stats.flow_controlled > 0, "{stats:?}");
    // Result 8 answers were resent, never counted as sent: exactly one accepted SUBMIT
    // per delivery.
    assert_eq!(rig.sim.submits().len(), 300);
    rig.app.stop().await;
}

#[actix_web::test]
async fn a_full_window_waits_for_answers_and_resumes() {
    let rig = Rig::new(
        IsmgConfig {
            window: 2,
            resp_delay_ms: 50,
            ..sim_config()
        },
        json!({"window": 2, "max_connections": 1}),
    )
    .await;
    let users = rig.users(40).await;
    let id = rig.send(&users, "hello").await;
    let ds = rig.settled(&id, 30).await;
    assert!(ds.iter().all(|d| d["state"] == "delivered"));
    // Never more than the window in flight: the gateway never had to refuse one.
    assert_eq!(rig.sim.stats().flow_controlled, 0);
    rig.app.stop().await;
}

#[actix_web::test]
async fn a_gateway_killed_mid_stream_loses_nothing() {
    let rig = Rig::new(
        IsmgConfig {
            resp_delay_ms: 5,
            ..sim_config()
        },
        json!({}),
    )
    .await;
    let users = rig.users(400).await;
    assert!(until(10, || rig.sim.stats().connections_logged_in == 2).await);
    rig.sim.set_faults(IsmgFaults {
        drop_after_submits: 50,
        ..IsmgFaults::default()
    });
    let id = rig.send(&users, "hello").await;
    let ds = rig.settled(&id, 60).await;
    assert_eq!(ds.len(), 400);
    assert!(ds.iter().all(|d| d["state"] == "delivered"), "{ds:?}");
    let stats = rig.sim.stats();
    assert!(stats.connections_dropped >= 2, "{stats:?}");
    // Every number got it; a duplicate is only possible for what was in a window.
    let submits = rig.sim.submits();
    let mut numbers: Vec<&str> = submits
        .iter()
        .map(|s| s.dest_terminal_ids[0].as_str())
        .collect();
    numbers.sort_unstable();
    numbers.dedup();
    assert_eq!(numbers.len(), 400);
    assert!(submits.len() <= 400 + 2 * 16, "{} submits", submits.len());
    rig.app.stop().await;
}

#[actix_web::test]
async fn reports_before_and_after_the_submit_resp_are_both_matched() {
    let rig = Rig::new(sim_config(), json!({})).await;
    let users = rig.users(10).await;
    let id = rig.send(&users[..5], "after").await;
    rig.settled(&id, 30).await;
    rig.sim.set_faults(IsmgFaults {
        report_before_resp: true,
        ..IsmgFaults::default()
    });
    let id2 = rig.send(&users[5..], "before").await;
    for id in [id, id2] {
        let ds = rig.settled(&id, 30).await;
        assert!(ds.iter().all(|d| d["state"] == "delivered"), "{ds:?}");
    }
    rig.app.stop().await;
}

#[actix_web::test]
async fn an_unanswered_submit_is_sent_again_after_the_timeout() {
    let rig = Rig::new(sim_config(), json!({"response_timeout_seconds": 1})).await;
    let users = rig.users(1).await;
    assert!(until(10, || rig.sim.stats().connections_logged_in == 2).await);
    rig.sim.set_faults(IsmgFaults {
        stall_next: 1,
        ..IsmgFaults::default()
    });
    let id = rig.send(&users, "hello").await;
    let ds = rig.settled(&id, 30).await;
    assert_eq!(ds[0]["state"], "delivered");
    assert_eq!(rig.sim.stats().stalled, 1);
    let metrics = rig.app.metrics().await;
    assert!(
        metrics.contains(&format!(
            r#"umsd_cmpp_resends_total{{channel="{}"}} 1"#,
            rig.code
        )),
        "{metrics}"
    );
    rig.app.stop().await;
}

#[actix_web::test]
async fn idle_sessions_keep_the_link_alive_and_mo_messages_are_stored() {
    let rig = Rig::new(sim_config(), json!({"heartbeat_seconds": 1})).await;
    assert!(until(10, || rig.sim.stats().active_tests_received >= 4).await);
    assert!(rig
        .sim
        .send_mo("900001", "+8613900000001", "1069000199", "退订 STOP"));
    let items = crate::eventually(10, "the MO message to be stored", || async {
        let (status, body) = rig.app.get("/v1/mo").await;
        assert_eq!(status, 200, "{body}");
        if body["items"].as_array().is_some_and(|a| !a.is_empty()) {
            Ok(body["items"].clone())
        } else {
            Err(body)
        }
    })
    .await;
    assert_eq!(items[0]["text"], "退订 STOP", "{items}");
    assert_eq!(items[0]["from"], "+8613900000001");
    assert_eq!(items[0]["to"], "1069000199");
    assert_eq!(items[0]["channel"], rig.code.as_str());
    rig.app.stop().await;

    // The gateway's own ACTIVE_TESTs are answered, so it keeps the link.
    let rig = Rig::new(
        IsmgConfig {
            heartbeat_seconds: 1,
            ..sim_config()
        },
        json!({"heartbeat_seconds": 60}),
    )
    .await;
    assert!(until(10, || rig.sim.stats().active_test_resps >= 4).await);
    let stats = rig.sim.stats();
    assert_eq!(stats.connections_dropped, 0, "{stats:?}");
    assert_eq!(stats.connections_logged_in, 2, "{stats:?}");
    rig.app.stop().await;
}

/// The channel's rate counts SUBMITs and holds across the account's sessions (±5 % over
/// 10 s), a long message taking one permit per segment.
#[actix_web::test]
async fn the_channel_rate_holds_across_four_sessions() {
    let rig = Rig::new(
        sim_config(),
        json!({"max_connections": 4, "rate_per_second": 40}),
    )
    .await;
    let users = rig.users(560).await;
    assert!(until(10, || rig.sim.stats().connections_logged_in == 4).await);
    let id = rig.send(&users, "hello").await;
    let ds = rig.settled(&id, 40).await;
    assert!(ds.iter().all(|d| d["state"] == "delivered"));
    let mut at: Vec<u64> = rig.sim.submits().iter().map(|s| s.at_ms).collect();
    at.sort_unstable();
    assert_eq!(at.len(), 560);
    // After the first second (the burst), 10 s of steady rate.
    let from = at[0] + 1000;
    let n = at
        .iter()
        .filter(|t| **t >= from && **t < from + 10_000)
        .count();
    assert!((380..=420).contains(&n), "{n} SUBMITs in 10 s at 40/s");
    let per_session: std::collections::HashSet<u64> =
        rig.sim.submits().iter().map(|s| s.connection).collect();
    assert_eq!(per_session.len(), 4, "every session took a share");
    rig.app.stop().await;
}

/// A receiver of callback posts: answers 500 to the first `fail_first`, then 200; keeps
/// every request's headers and body.
/// One request a [`Receiver`] got: headers (lower-case names), body, the status answered.
type Posted = (std::collections::HashMap<String, String>, String, u16);

struct Receiver {
    url: String,
    got: std::sync::Arc<std::sync::Mutex<Vec<Posted>>>,
}

impl Receiver {
    async fn start(fail_first: usize) -> Receiver {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let got: std::sync::Arc<std::sync::Mutex<Vec<_>>> = Default::default();
        let seen = got.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        // One request: headers, then content-length bytes.
                        let head_end = loop {
                            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                break i + 4;
                            }
                            let mut chunk = [0u8; 4096];
                            match sock.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        };
                        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                        let headers: std::collections::HashMap<String, String> = head
                            .lines()
                            .skip(1)
                            .filter_map(|l| l.split_once(':'))
                            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
                            .collect();
                        let len: usize = headers
                            .get("content-length")
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0);
                        while buf.len() < head_end + len {
                            let mut chunk = [0u8; 4096];
                            match sock.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        let body =
                            String::from_utf8_lossy(&buf[head_end..head_end + len]).to_string();
                        buf.drain(..head_end + len);
                        let status = {
                            let mut g = seen.lock().unwrap();
                            let status = if g.len() < fail_first { 500 } else { 200 };
                            g.push((headers, body, status));
                            status
                        };
                        let answer = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n");
                        if sock.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Receiver { url, got }
    }
}

/// MO messages are pushed to the app's callback endpoint, signed, and retried until it
/// takes them; the endpoints API checks what it is given.
#[actix_web::test]
async fn mo_messages_are_pushed_to_the_app_s_callback_url() {
    let rig = Rig::new(sim_config(), json!({})).await;
    let hook = Receiver::start(1).await;
    for (bad, field) in [
        (
            json!({"endpoints": [{"url": "ftp://x", "default": true, "events": ["mo"]}]}),
            "endpoints[0].url",
        ),
        (
            json!({"endpoints": [{"url": "http://a/x", "default": true, "events": ["nope"]}]}),
            "endpoints[0].events",
        ),
        (
            json!({"endpoints": [{"url": "http://a/x", "events": ["mo"]}]}),
            "endpoints",
        ),
        (
            json!({"endpoints": (0..6).map(|i| json!({"url": format!("http://a/{i}"),
                 "default": i == 0, "events": ["mo"]})).collect::<Vec<_>>()}),
            "endpoints",
        ),
    ] {
        let res = rig
            .app
            .http
            .put(rig.app.url("/v1/callbacks"))
            .basic_auth(DEMO.0, Some(DEMO.1))
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 422);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["field"], field, "{body}");
    }
    let res = rig
        .app
        .http
        .put(rig.app.url("/v1/callbacks"))
        .basic_auth(DEMO.0, Some(DEMO.1))
        .json(&json!({"endpoints": [{"url": hook.url, "default": true,
                                     "events": ["mo", "delivered"]}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let saved: Value = res.json().await.unwrap();
    let secret = saved["endpoints"][0]["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"));
    let (_, listed) = rig.app.get("/v1/callbacks").await;
    assert!(listed["endpoints"][0].get("secret").is_none(), "{listed}");

    assert!(until(10, || rig.sim.stats().connections_logged_in == 2).await);
    assert!(rig
        .sim
        .send_mo("900001", "+8613900000002", "10690001", "好的，收到"));
    assert!(until(20, || hook.got.lock().unwrap().len() >= 2).await);
    let got = hook.got.lock().unwrap().clone();
    assert_eq!(got[0].2, 500);
    assert_eq!(got[1].2, 200);
    // The same event, posted again after the failure.
    assert_eq!(got[0].0["webhook-id"], got[1].0["webhook-id"]);
    assert_eq!(got[0].1, got[1].1);
    let (headers, body, _) = &got[1];
    let key = umsd_actors::providers::webhook::secret_key(&secret).unwrap();
    let ts: i64 = headers["webhook-timestamp"].parse().unwrap();
    assert_eq!(
        headers["webhook-signature"],
        umsd_actors::providers::webhook::sign(&key, &headers["webhook-id"], ts, body.as_bytes())
    );
    let event: Value = serde_json::from_str(body).unwrap();
    assert_eq!(event["type"], "mo");
    assert_eq!(event["data"]["from"], "+8613900000002");
    assert_eq!(event["data"]["to"], "10690001");
    assert_eq!(event["data"]["text"], "好的，收到");
    assert_eq!(event["data"]["channel"], rig.code.as_str());

    let (status, tested) = rig
        .app
        .post_as(DEMO, "/v1/callbacks/test", &json!({}))
        .await;
    assert_eq!(status, 200, "{tested}");
    assert_eq!(tested["results"][0]["ok"], true, "{tested}");
    rig.app.stop().await;
}

/// Delivery events go to the message's own callback URL if it named one, else to the
/// app's default endpoint — each only if that endpoint asked for the event.
#[actix_web::test]
async fn delivery_events_are_pushed_to_the_default_or_the_message_s_endpoint() {
    let rig = Rig::new(sim_config(), json!({})).await;
    let default = Receiver::start(0).await;
    let other = Receiver::start(0).await;
    let probe = Receiver::start(0).await;
    let (status, saved) = rig
        .app
        .put_as(
            DEMO,
            "/v1/callbacks",
            &json!({"endpoints": [
                {"url": default.url, "default": true, "events": ["sent", "delivered"]},
                {"url": other.url, "events": ["delivered", "failed"]},
                {"url": probe.url, "events": ["delivered"]},
            ]}),
        )
        .await;
    assert_eq!(status, 200, "{saved}");
    let users = rig.users(3).await;
    // Receipts looks the subscribing apps up every 2 s; until it has seen the endpoints,
    // no delivery events are queued. Messages to a third endpoint of their own show when
    // it has: one is sent every 200 ms until an event of one arrives.
    let started = Instant::now();
    loop {
        let (status, sent) = rig
            .app
            .send(&json!({
                "audience": {"user_ids": [&users[2]]},
                "channels": [&rig.code],
                "content": {&rig.code: {"text": "probe"}},
                "callback_url": probe.url,
            }))
            .await;
        assert_eq!(status, 202, "{sent}");
        let seen = crate::poll(Duration::from_millis(200), || {
            let got = probe.got.lock().unwrap().len();
            std::future::ready(if got > 0 { Ok(()) } else { Err(()) })
        })
        .await;
        if seen.is_ok() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the callback endpoints were never taken up"
        );
    }
    let id = rig.send(&users[..1], "hello").await;
    rig.settled(&id, 20).await;
    assert!(until(10, || default.got.lock().unwrap().len() >= 2).await);
    let kinds = |r: &Receiver| -> Vec<String> {
        let mut k: Vec<String> = r
            .got
            .lock()
            .unwrap()
            .iter()
            .map(|(_, body, _)| {
                let v: Value = serde_json::from_str(body).unwrap();
                assert_eq!(v["data"]["channel"], rig.code.as_str(), "{v}");
                v["type"].as_str().unwrap().to_owned()
            })
            .collect();
        k.sort();
        k
    };
    assert_eq!(kinds(&default), ["delivered", "sent"]);

    let (status, sent) = rig
        .app
        .send(&json!({
            "audience": {"user_ids": [&users[1]]},
            "channels": [&rig.code],
            "content": {&rig.code: {"text": "again"}},
            "callback_url": other.url,
        }))
        .await;
    assert_eq!(status, 202, "{sent}");
    rig.settled(sent["id"].as_str().unwrap(), 20).await;
    assert!(until(10, || !other.got.lock().unwrap().is_empty()).await);
    // Events are queued with the changes they report, and removed once posted: with the
    // message settled and the outbox empty, nothing more is on its way.
    rig.app
        .wait_count("SELECT count(*) FROM callback_outbox", 10, |n| n == 0)
        .await;
    assert_eq!(kinds(&other), ["delivered"]);
    assert_eq!(
        kinds(&default),
        ["delivered", "sent"],
        "nothing more to the default"
    );
    let body: Value = serde_json::from_str(&other.got.lock().unwrap()[0].1).unwrap();
    assert_eq!(body["data"]["message"], sent["id"]);
    assert_eq!(body["data"]["user_id"], users[1].as_str());
    assert_eq!(body["data"]["code"], "DELIVRD");
    rig.app.stop().await;
}
