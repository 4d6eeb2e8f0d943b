//! `/v1/users`: create or replace, read, delete, validation, isolation, bulk upload.

use reqwest::StatusCode;
use serde_json::{json, Value};

use super::{error_of, TestApp};

const DEMO: (&str, &str) = ("demo", "demo-secret");

impl TestApp {
    async fn put_user(&self, app: (&str, &str), id: &str, body: &Value) -> (StatusCode, Value) {
        let res = self
            .http
            .put(self.url(&format!("/v1/users/{id}")))
            .basic_auth(app.0, Some(app.1))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = res.status();
        (status, res.json().await.unwrap_or(Value::Null))
    }
}

#[actix_web::test]
async fn a_user_is_created_replaced_read_and_deleted() {
    let app = TestApp::spawn().await;
    let body = json!({"enabled": true, "locale": "zh_CN", "tags": ["vip", "beta", "vip"],
        "bindings": [{"type": "phone", "value": "+8613800138000", "scope": "all"},
                     {"type": "email", "value": "a@example.com", "scope": "channel:email"}]});
    let (status, created) = app.put_user(DEMO, "u1", &body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["tags"], json!(["vip", "beta"]), "tags are a set");

    let (status, got) = app.get_as(DEMO, "/v1/users/u1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["locale"], "zh_CN");
    assert_eq!(got["bindings"].as_array().unwrap().len(), 2);

    // PUT replaces the whole user, bindings included.
    let (status, _) = app
        .put_user(
            DEMO,
            "u1",
            &json!({"enabled": false, "bindings": [{"type": "jpush", "value": "1a0018970a"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, got) = app.get_as(DEMO, "/v1/users/u1").await;
    assert_eq!(got["enabled"], false);
    assert_eq!(got["tags"], json!([]));
    assert_eq!(
        got["bindings"],
        json!([{"type": "jpush", "value": "1a0018970a", "scope": "all"}])
    );

    // Another app never sees it.
    let (status, _) = app.get_as(("other", "other-secret"), "/v1/users/u1").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let res = app
        .http
        .delete(app.url("/v1/users/u1"))
        .basic_auth(DEMO.0, Some(DEMO.1))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let (status, body) = app.get_as(DEMO, "/v1/users/u1").await;
    assert_eq!(
        (status, error_of(&body).0.as_str()),
        (StatusCode::NOT_FOUND, "not_found")
    );
    assert_eq!(app.count("SELECT count(*) FROM bindings").await, 0);
}

#[actix_web::test]
async fn user_rules_name_their_field_and_store_nothing() {
    let app = TestApp::spawn().await;
    let cases = [
        (
            json!({"bindings": [{"type": "fax", "value": "1"}]}),
            "invalid_value",
            "bindings[0].type",
        ),
        (
            json!({"bindings": [{"type": "phone", "value": "abc"}]}),
            "invalid_value",
            "bindings[0].value",
        ),
        (
            json!({"bindings": [{"type": "email", "value": "nobody"}]}),
            "invalid_value",
            "bindings[0].value",
        ),
        (
            json!({"bindings": [{"type": "jpush", "value": "x", "scope": "channel:nope"}]}),
            "unknown_channel",
            "bindings[0].scope",
        ),
        (
            json!({"bindings": [{"type": "jpush", "value": "x", "scope": "everyone"}]}),
            "invalid_value",
            "bindings[0].scope",
        ),
        (
            json!({"bindings": [{"type": "jpush", "value": "x"}, {"type": "jpush", "value": "y"}]}),
            "duplicate_value",
            "bindings[1]",
        ),
        (
            json!({"bindings": [{"type": "jpush"}]}),
            "missing_field",
            "bindings[0].value",
        ),
        (json!({"tags": ["has space"]}), "invalid_value", "tags[0]"),
        (json!({"locale": "not a locale"}), "invalid_value", "locale"),
        (json!({"enabled": "yes"}), "invalid_value", "enabled"),
        (json!({"nickname": "x"}), "unknown_field", "nickname"),
    ];
    for (body, code, field) in cases {
        let (status, answer) = app.put_user(DEMO, "u1", &body).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body} → {answer}"
        );
        assert_eq!(
            error_of(&answer),
            (code.to_owned(), Some(field.to_owned())),
            "{body}"
        );
    }
    let (status, answer) = app.put_user(DEMO, "a%20b", &json!({})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_of(&answer).1.as_deref(), Some("user_id"));
    assert_eq!(app.count("SELECT count(*) FROM users").await, 0);
}

#[actix_web::test]
async fn a_bulk_upload_answers_each_row() {
    let app = TestApp::spawn().await;
    let (status, _) = app.put_user(DEMO, "existing", &json!({})).await;
    assert_eq!(status, StatusCode::CREATED);
    let rows = json!({"users": [
        {"user_id": "b1", "bindings": [{"type": "phone", "value": "13800138000"}]},
        {"user_id": "existing", "tags": ["vip"]},
        {"user_id": "b2", "bindings": [{"type": "phone", "value": "nope"}]},
        {"tags": ["x"]},
        {"user_id": "b1"},
        "not an object",
        {"user_id": "b3", "enabled": false},
    ]});
    let (status, body) = app.post_as(DEMO, "/v1/users/batch", &rows).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let results = body["results"].as_array().unwrap();
    let statuses: Vec<&str> = results
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["created", "updated", "error", "error", "error", "error", "created"]
    );
    assert_eq!(results[2]["error"]["field"], "users[2].bindings[0].value");
    assert_eq!(results[3]["error"]["field"], "users[3].user_id");
    assert_eq!(results[4]["error"]["code"], "duplicate_value");
    assert_eq!(results[5]["error"]["field"], "users[5]");
    assert_eq!(
        (body["stored"].as_i64(), body["failed"].as_i64()),
        (Some(3), Some(4))
    );
    assert_eq!(app.count("SELECT count(*) FROM users").await, 3);
    let (_, existing) = app.get_as(DEMO, "/v1/users/existing").await;
    assert_eq!(existing["tags"], json!(["vip"]));

    let too_many: Vec<Value> = (0..1001)
        .map(|i| json!({"user_id": format!("u{i}")}))
        .collect();
    let (status, body) = app
        .post_as(DEMO, "/v1/users/batch", &json!({ "users": too_many }))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        error_of(&body),
        ("invalid_value".into(), Some("users".into()))
    );
}
