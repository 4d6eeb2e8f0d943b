//! The status writer's hook: it tells its subscribers every change it applied.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use serde_json::json;
use umsd_actors::domain::{DeliveryState, MessagePk};
use umsd_actors::receipts::{StatusApplied, SubscribeApplied};
use umsd_actors::store::status::AppliedChange;
use umsd_actors::supervisor::GetReceipts;

use crate::{TestApp, DEMO};

async fn users(app: &TestApp, ids: &[&str]) {
    for user in ids {
        let (status, _) = app
            .put_as(
                DEMO,
                &format!("/v1/users/{user}"),
                &json!({"enabled": true}),
            )
            .await;
        assert!(status.is_success(), "{status}");
    }
}

/// Sends an inbox message to `user` and waits until it is done.
async fn delivered_to(app: &TestApp, user: &str) -> String {
    let (status, sent) = app
        .send(&json!({
            "audience": {"user_ids": [user]},
            "channels": ["inbox"],
            "content": {"inbox": {"title": "t", "body": "step one"}},
        }))
        .await;
    assert_eq!(status, 202, "{sent}");
    let id = sent["id"].as_str().unwrap().to_owned();
    app.wait_for(&format!("/v1/messages/{id}"), 10, |m| m["status"] == "done")
        .await;
    id
}

/// Forwards what the status writer publishes to the test.
struct Collector(tokio::sync::mpsc::UnboundedSender<Arc<[AppliedChange]>>);

impl Actor for Collector {
    type Context = Context<Self>;
}

impl Handler<StatusApplied> for Collector {
    type Result = ();

    fn handle(&mut self, msg: StatusApplied, _: &mut Self::Context) {
        let _ = self.0.send(msg.0);
    }
}

#[actix_web::test]
async fn the_status_writer_tells_subscribers_what_it_applied() {
    let app = TestApp::spawn().await;
    users(&app, &["u1"]).await;
    let receipts = app.supervisor().send(GetReceipts).await.unwrap().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let collector = Collector(tx).start();
    receipts
        .send(SubscribeApplied(collector.recipient()))
        .await
        .unwrap();

    let id = delivered_to(&app, "u1").await;
    let pk = MessagePk::parse(&id).unwrap();
    // Await the published changes of this message until its delivery has been read.
    let (_, list) = app.get("/v1/inbox/u1").await;
    let item = list["items"][0]["id"].as_str().unwrap().to_owned();
    let (status, _) = app
        .post_as(DEMO, "/v1/inbox/u1/read", &json!({"ids": [item]}))
        .await;
    assert_eq!(status, 200);
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(batch) = rx.recv().await {
            seen.extend(batch.iter().filter(|c| c.message_pk == pk).map(|c| c.state));
            if seen.contains(&DeliveryState::Read) {
                break;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("published for the message: {seen:?}"));
    assert_eq!(seen, [DeliveryState::Delivered, DeliveryState::Read]);
    app.stop().await;
}
