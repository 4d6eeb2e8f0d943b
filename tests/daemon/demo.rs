//! The README's demo: `config/demo.toml` starts umsd with a channel of every type pointed
//! at the bundled simulators; a message to a user bound on all of them is sent on every
//! channel and comes back delivered within seconds. (Ports are moved to free ones so the
//! test can run beside anything else.)

use std::time::Duration;

use serde_json::Value;

use super::{cleanup, eventually, free_port, test_dir, Daemon};

#[actix_web::test]
async fn the_demo_configuration_delivers_on_every_channel() {
    let dir = test_dir("demo");
    let mut text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/demo.toml")).unwrap();
    let port = free_port();
    text = text.replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"));
    let smtp = free_port();
    text = text
        .replace("127.0.0.1:2525", &format!("127.0.0.1:{smtp}"))
        .replace("port = 2525", &format!("port = {smtp}"));
    let cmpp = free_port();
    text = text
        .replace("127.0.0.1:7890", &format!("127.0.0.1:{cmpp}"))
        .replace("port = 7890", &format!("port = {cmpp}"));
    for old in [
        "18101", "18102", "18103", "18104", "18105", "18106", "18107",
    ] {
        text = text.replace(
            &format!("127.0.0.1:{old}"),
            &format!("127.0.0.1:{}", free_port()),
        );
    }
    std::fs::write(dir.join("umsd.toml"), text).unwrap();
    let mut d = Daemon::start(&dir, port);
    d.wait_ready(Duration::from_secs(60)).await;
    assert!(d
        .log()
        .contains("Create a user with an address on every channel"));

    // The hints print the two requests to make; take them from the log.
    let log = d.log();
    let arg = |after: &str| -> Value {
        let start = log.find(after).unwrap();
        let rest = &log[start..];
        let d = rest.find("-d '").unwrap() + 4;
        let end = rest[d..].find('\'').unwrap();
        serde_json::from_str(&rest[d..d + end]).unwrap()
    };
    let user = arg("Create a user");
    let message = arg("Send a message");
    let http = crate::http();
    let res = http
        .put(format!("{}/v1/users/u1", d.base()))
        .basic_auth("demo", Some("demo-secret"))
        .json(&user)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());
    let res = http
        .post(format!("{}/v1/messages", d.base()))
        .basic_auth("demo", Some("demo-secret"))
        .json(&message)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);

    let m = eventually(
        Duration::from_secs(20),
        || format!("hello-1 to be done\n{}", d.log()),
        || async {
            let m: Value = http
                .get(format!("{}/v1/messages/hello-1", d.base()))
                .basic_auth("demo", Some("demo-secret"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if m["status"] == "done" {
                Ok(m)
            } else {
                Err(m)
            }
        },
    )
    .await;
    let channels = m["funnel"]["channels"].as_object().unwrap();
    assert_eq!(channels.len(), 10, "{m}");
    for (code, f) in channels {
        assert_eq!(f["sent"], 1, "{code}: {m}");
    }
    assert_eq!(m["funnel"]["users"]["delivered"], 1, "{m}");
    // Most channels deliver every time; the simulators mix in a few failures.
    let delivered = channels.values().filter(|f| f["delivered"] == 1).count();
    assert!(delivered >= 8, "{m}");
    assert!(d.terminate(Duration::from_secs(30)));
    cleanup(&dir);
}
