//! The SMTP sink against lettre, the client the daemon uses: plain, STARTTLS and
//! implicit TLS connections, and refused recipients.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use lettre::message::Mailbox;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use umsd_sim::smtp::{self, SmtpConfig, SmtpHandle};

fn sink(tls: bool, implicit_tls: bool) -> SmtpHandle {
    smtp::start(SmtpConfig {
        tls,
        implicit_tls,
        ..SmtpConfig::default()
    })
    .unwrap()
}

fn transport(port: u16, tls: Tls) -> AsyncSmtpTransport<Tokio1Executor> {
    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(port)
        .tls(tls)
        .build()
}

fn tls_params() -> TlsParameters {
    TlsParameters::builder("localhost".to_owned())
        .dangerous_accept_invalid_certs(true)
        .build_rustls()
        .unwrap()
}

fn message(to: &str) -> Message {
    Message::builder()
        .from("umsd <noreply@example.com>".parse::<Mailbox>().unwrap())
        .to(to.parse::<Mailbox>().unwrap())
        .subject("Your code")
        .body("Your code is 1234.\r\n.leading dot stays\r\n".to_owned())
        .unwrap()
}

#[tokio::test]
async fn plain_session_is_recorded() {
    let s = sink(false, false);
    let t = transport(s.addr().port(), Tls::None);
    let r = t.send(message("alice@example.com")).await.unwrap();
    assert!(r.is_positive());
    let mails = s.received();
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].from, "noreply@example.com");
    assert_eq!(mails[0].to, ["alice@example.com"]);
    assert!(mails[0].data.contains("Subject: Your code"));
    assert!(mails[0].data.contains("\r\n.leading dot stays"));
    assert!(!mails[0].tls);
    s.shutdown();
}

#[tokio::test]
async fn starttls_session_is_encrypted() {
    let s = sink(true, false);
    let t = transport(s.addr().port(), Tls::Required(tls_params()));
    t.send(message("bob@example.com")).await.unwrap();
    // A client that does not ask for TLS still gets through.
    let plain = transport(s.addr().port(), Tls::None);
    plain.send(message("carol@example.com")).await.unwrap();
    let mails = s.received();
    assert_eq!(mails.len(), 2);
    assert_eq!(mails[0].to, ["bob@example.com"]);
    assert!(mails[0].tls);
    assert!(!mails[1].tls);
}

#[tokio::test]
async fn implicit_tls_session_is_encrypted() {
    let s = sink(false, true);
    let t = transport(s.addr().port(), Tls::Wrapper(tls_params()));
    t.send(message("dave@example.com")).await.unwrap();
    let mails = s.received();
    assert_eq!(mails.len(), 1);
    assert!(mails[0].tls);
}

#[tokio::test]
async fn refused_recipients() {
    let s = sink(true, false);
    let t = transport(s.addr().port(), Tls::Required(tls_params()));
    let e = t.send(message("reject.me@example.com")).await.unwrap_err();
    assert!(e.is_permanent(), "{e}");
    assert_eq!(e.status().map(|c| c.to_string()).as_deref(), Some("550"));
    let e = t.send(message("busy-box@example.com")).await.unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert_eq!(e.status().map(|c| c.to_string()).as_deref(), Some("450"));
    t.send(message("ok@example.com")).await.unwrap();
    let mails = s.received();
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].to, ["ok@example.com"]);
}
