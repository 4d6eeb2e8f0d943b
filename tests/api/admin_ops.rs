//! Operator API and the operations endpoints.

use reqwest::StatusCode;
use serde_json::{json, Value};

use super::{error_of, inbox_message, TestApp, ADMIN};

#[actix_web::test]
async fn operators_create_apps_whose_secret_is_shown_once() {
    let app = TestApp::spawn().await;
    let res = app
        .http
        .post(app.url("/admin/apps"))
        .bearer_auth(ADMIN)
        .json(&json!({"name": "Shop"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let created: Value = res.json().await.unwrap();
    let key = created["app_key"].as_str().unwrap().to_owned();
    let secret = created["master_secret"].as_str().unwrap().to_owned();
    // Only a hash is stored.
    let db = app.db().await;
    let row = db
        .query_one("SELECT secret_hash FROM apps WHERE app_key = $1", &[&key])
        .await
        .unwrap();
    let hash: Vec<u8> = row.get(0);
    assert_ne!(hash, secret.as_bytes());
    assert_eq!(hash.len(), 32);
    let listed: Value = app
        .http
        .get(app.url("/admin/apps"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(!listed.to_string().contains(&secret));
    assert!(listed["apps"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["app_key"] == key));

    // The new app authenticates, but has no channel granted yet.
    let (status, body) = app
        .post_as((&key, &secret), "/v1/messages", &inbox_message(None, "u1"))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_of(&body).0, "unknown_channel");

    for token in [None, Some("wrong")] {
        let mut req = app
            .http
            .post(app.url("/admin/apps"))
            .json(&json!({"name": "x"}));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    // App credentials are not operator credentials.
    let res = app
        .http
        .post(app.url("/admin/apps"))
        .basic_auth("demo", Some("demo-secret"))
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = app
        .http
        .post(app.url("/admin/apps"))
        .bearer_auth(ADMIN)
        .json(&json!({"name": ""}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
}

#[actix_web::test]
async fn health_readiness_openapi_and_unknown_paths() {
    let app = TestApp::spawn().await;
    let get = |p: &str| app.http.get(app.url(p)).send();
    assert_eq!(get("/healthz").await.unwrap().status(), StatusCode::OK);
    let ready: Value = get("/readyz").await.unwrap().json().await.unwrap();
    assert_eq!(ready["status"], "ready");
    let spec: Value = get("/openapi.json").await.unwrap().json().await.unwrap();
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/v1/messages",
        "/v1/messages/batch",
        "/v1/messages/{id}",
        "/admin/apps",
    ] {
        assert!(spec["paths"][path].is_object(), "{path} is documented");
    }
    let res = get("/no/such/thing").await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let b: Value = res.json().await.unwrap();
    assert_eq!(error_of(&b).0, "not_found");
}

#[actix_web::test]
async fn metrics_describe_the_send_path_with_real_histograms() {
    let app = TestApp::spawn().await;
    assert_eq!(
        app.send(&inbox_message(None, "u1")).await.0,
        StatusCode::ACCEPTED
    );
    let _ = app.send(&json!({"nonsense": true})).await;
    let text = app.metrics().await;
    for needle in [
        "umsd_http_requests_total{",
        "route=\"/v1/messages\"",
        "umsd_http_request_duration_seconds_bucket{",
        "umsd_messages_accepted_total{app=\"demo\",priority=\"normal\"}",
        "umsd_ingest_batch_size_bucket{",
        "umsd_ingest_commit_duration_seconds_bucket{",
        "umsd_ingest_queue_depth",
        "umsd_rejections_total{reason=\"validation\"}",
    ] {
        assert!(text.contains(needle), "metrics lack {needle}");
    }
    assert!(!text.contains("quantile="), "histograms, not summaries");
}

#[actix_web::test]
async fn the_null_route_validates_like_a_send_and_stores_nothing() {
    let app = TestApp::spawn().await;
    let (status, body) = app
        .post_as(
            ("demo", "demo-secret"),
            "/bench/messages",
            &inbox_message(Some("n-1"), "u1"),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let mut bad = inbox_message(None, "u1");
    bad["channels"] = json!(["nope"]);
    let (status, _) = app
        .post_as(("demo", "demo-secret"), "/bench/messages", &bad)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(app.stored().await, 0);

    let off = TestApp::spawn_with(|c| c.bench.null_route = false).await;
    let (status, _) = off
        .post_as(
            ("demo", "demo-secret"),
            "/bench/messages",
            &inbox_message(None, "u1"),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[actix_web::test]
async fn grants_switch_channels_on_and_off_for_an_app() {
    let app = TestApp::spawn().await;
    let grant = |key: &str, code: &str, enabled: bool| {
        app.http
            .put(app.url(&format!("/admin/apps/{key}/grants/{code}")))
            .bearer_auth(ADMIN)
            .json(&json!({ "enabled": enabled }))
            .send()
    };
    let other = ("other", "other-secret");
    let mut sms = inbox_message(None, "u1");
    sms["channels"] = json!(["email"]);
    sms["content"] = json!({"email": {"subject": "s", "text": "t"}});
    assert_eq!(
        app.post_as(other, "/v1/messages", &sms).await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );

    let res = grant("other", "email", true).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        app.post_as(other, "/v1/messages", &sms).await.0,
        StatusCode::ACCEPTED
    );

    // Switched off by the app: the channel is known but disabled.
    assert_eq!(
        grant("other", "email", false).await.unwrap().status(),
        StatusCode::OK
    );
    let (status, body) = app.post_as(other, "/v1/messages", &sms).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        error_of(&body),
        ("channel_disabled".into(), Some("channels[0]".into()))
    );

    assert_eq!(
        grant("nobody", "email", true).await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    let res = grant("other", "nope", true).await.unwrap();
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let res = app
        .http
        .put(app.url("/admin/apps/other/grants/email"))
        .json(&json!({"enabled": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}

#[actix_web::test]
async fn channels_are_created_replaced_and_shown_without_credentials() {
    let app = TestApp::spawn().await;
    let put = |code: &str, body: serde_json::Value| {
        let req = app
            .http
            .put(app.url(&format!("/admin/channels/{code}")))
            .bearer_auth(crate::ADMIN)
            .json(&body);
        async move {
            let res = req.send().await.unwrap();
            let status = res.status();
            (status, res.json::<serde_json::Value>().await.unwrap())
        }
    };
    let secret = "whsec_c2ltLXdlYmhvb2stc2lnbmluZy1rZXktMDAwMQ==";

    // Bad input names the field and writes nothing.
    let (status, body) = put(
        "hook",
        json!({"type": "webhook", "settings": {"secret": secret, "colour": 1}}),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(crate::error_of(&body).1.as_deref(), Some("settings.colour"));
    let (status, body) = put("hook", json!({"type": "pigeon", "settings": {}})).await;
    assert_eq!(status, 422);
    assert_eq!(crate::error_of(&body).1.as_deref(), Some("type"));
    let (status, body) = put("hook", json!({"type": "webhook", "settings": {}})).await;
    assert_eq!(status, 422);
    assert_eq!(crate::error_of(&body).1.as_deref(), Some("settings"));
    let (status, body) = put(
        "hook",
        json!({"type": "webhook", "settings": {"secret": secret}, "extra": 1}),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        app.count("SELECT count(*) FROM channels WHERE code = 'hook'")
            .await,
        0
    );

    // Created, running, credentials never shown.
    let (status, body) = put(
        "hook",
        json!({"type": "webhook", "pool_size": 2, "rate_per_second": 10,
                                            "settings": {"secret": secret}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["type"], "webhook");
    assert!(body["settings"].get("secret").is_none(), "{body}");
    assert_eq!(body["state"]["running"], true, "{body}");

    // Replaced: the sender is restarted with the new settings.
    let (status, body) = put(
        "hook",
        json!({"type": "webhook", "pool_size": 6, "settings": {"secret": secret}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["pool_size"], 6);
    crate::eventually(5, "the sender to restart", || async {
        let res = app
            .http
            .get(app.url("/admin/channels/hook"))
            .bearer_auth(crate::ADMIN)
            .send()
            .await
            .unwrap();
        let got: serde_json::Value = res.json().await.unwrap();
        if got["state"]["running"] == true && got["pool_size"] == 6 {
            Ok(())
        } else {
            Err(got)
        }
    })
    .await;

    // A channel's type cannot change.
    let (status, body) = put("hook", json!({"type": "inbox", "settings": {}})).await;
    assert_eq!(status, 422);
    assert_eq!(crate::error_of(&body).0, "type_change");

    // Listing shows every channel without secrets; unknown codes are 404; no token, 401.
    let res = app
        .http
        .get(app.url("/admin/channels"))
        .bearer_auth(crate::ADMIN)
        .send()
        .await
        .unwrap();
    let list: serde_json::Value = res.json().await.unwrap();
    let text = list.to_string();
    assert!(
        text.contains("\"hook\"") && text.contains("\"inbox\""),
        "{text}"
    );
    assert!(!text.contains(secret));
    let res = app
        .http
        .get(app.url("/admin/channels/nope"))
        .bearer_auth(crate::ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let res = app
        .http
        .get(app.url("/admin/channels"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    app.stop().await;
}
