//! An SMTP sink for the e-mail channel: the `mailin` protocol state machine behind our
//! own tokio socket loop, with STARTTLS and optional implicit TLS (SMTPS) on a
//! self-signed certificate made at start. Every accepted message is kept (the last
//! 100 000) for tests to inspect. Recipients whose local part starts with `reject` get
//! `550 5.1.1`, with `busy` get `450 4.2.1`.

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use mailin::{Action, Handler, Response, Session as Smtp, SessionBuilder as SmtpBuilder};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

const MAILS_CAP: usize = 100_000;
/// Longest command or data line accepted; longer ones close the connection.
const MAX_LINE: u64 = 1 << 20;
const MAX_MESSAGE: usize = 32 << 20;
const IDLE: Duration = Duration::from_secs(300);

/// Configuration of the SMTP sink.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpConfig {
    /// Listen address; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Offer STARTTLS.
    pub tls: bool,
    /// Speak TLS from the first byte (SMTPS, port 465 style); STARTTLS is then not
    /// offered.
    pub implicit_tls: bool,
    /// Name in the greeting and the certificate.
    pub hostname: String,
    /// Worker threads of the sink's own runtime.
    pub threads: usize,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            tls: false,
            implicit_tls: false,
            hostname: "localhost".to_owned(),
            threads: 1,
        }
    }
}

/// One accepted message.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct Mail {
    /// Envelope sender (`MAIL FROM`).
    pub from: String,
    /// Accepted envelope recipients (`RCPT TO`).
    pub to: Vec<String>,
    /// The message as transmitted after `DATA`, dot-unstuffed, CRLF line ends.
    pub data: String,
    /// Whether the connection was encrypted (STARTTLS or implicit TLS).
    pub tls: bool,
}

#[derive(Default)]
struct Store {
    mails: Mutex<VecDeque<Mail>>,
}

impl Store {
    fn push(&self, m: Mail) {
        let mut q = self.mails.lock().unwrap_or_else(|e| e.into_inner());
        if q.len() >= MAILS_CAP {
            q.pop_front();
        }
        q.push_back(m);
    }
}

/// A running SMTP sink. Dropping it shuts it down too.
pub struct SmtpHandle {
    addr: SocketAddr,
    store: Arc<Store>,
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl SmtpHandle {
    /// The bound listen address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Accepted messages, oldest first.
    pub fn received(&self) -> Vec<Mail> {
        let q = self.store.mails.lock().unwrap_or_else(|e| e.into_inner());
        q.iter().cloned().collect()
    }

    /// Stop the listener and the sink's thread.
    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for SmtpHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl std::fmt::Debug for SmtpHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpHandle")
            .field("addr", &self.addr)
            .finish()
    }
}

/// Start the sink: bind now (so errors surface here) and serve from a dedicated thread.
pub fn start(cfg: SmtpConfig) -> io::Result<SmtpHandle> {
    let acceptor = if cfg.tls || cfg.implicit_tls {
        Some(crate::tls::self_signed(&cfg.hostname)?.0)
    } else {
        None
    };
    let listener = std::net::TcpListener::bind(cfg.listen)?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.threads.max(1))
        .thread_name("sim-smtp")
        .enable_all()
        .build()?;
    let store = Arc::new(Store::default());
    let (stop_tx, mut stop_rx) = watch::channel(false);

    let mut builder = SmtpBuilder::new(cfg.hostname.clone());
    if cfg.tls && !cfg.implicit_tls {
        builder.enable_start_tls();
    }
    let shared = Arc::new(Shared {
        builder,
        acceptor,
        implicit_tls: cfg.implicit_tls,
        store: Arc::clone(&store),
    });
    let thread = std::thread::Builder::new()
        .name(format!("sim-smtp-{}", addr.port()))
        .spawn(move || {
            runtime.block_on(async move {
                let listener = match TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!(error = %e, "smtp listener unusable");
                        return;
                    }
                };
                loop {
                    let accepted = tokio::select! {
                        _ = stop_rx.changed() => return,
                        r = listener.accept() => r,
                    };
                    match accepted {
                        Ok((stream, peer)) => {
                            tokio::spawn(serve(Arc::clone(&shared), stream, peer.ip()));
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "smtp accept failed");
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
            });
            runtime.shutdown_timeout(Duration::from_millis(200));
        })?;
    Ok(SmtpHandle {
        addr,
        store,
        stop: stop_tx,
        thread: Some(thread),
    })
}

struct Shared {
    builder: SmtpBuilder,
    acceptor: Option<TlsAcceptor>,
    implicit_tls: bool,
    store: Arc<Store>,
}

/// Per-connection protocol callbacks.
struct Conn {
    store: Arc<Store>,
    tls: Arc<AtomicBool>,
    from: String,
    to: Vec<String>,
    data: Vec<u8>,
    too_large: bool,
}

impl Handler for Conn {
    fn rcpt(&mut self, to: &str) -> Response {
        let local = to.split('@').next().unwrap_or(to).to_ascii_lowercase();
        if local.starts_with("reject") {
            Response::custom(550, "5.1.1 mailbox unavailable".to_owned())
        } else if local.starts_with("busy") {
            Response::custom(450, "4.2.1 try again later".to_owned())
        } else {
            mailin::response::OK
        }
    }

    fn data_start(&mut self, _domain: &str, from: &str, _is8bit: bool, to: &[String]) -> Response {
        self.from = from.to_owned();
        self.to = to.to_vec();
        self.data.clear();
        self.too_large = false;
        mailin::response::OK
    }

    fn data(&mut self, buf: &[u8]) -> io::Result<()> {
        if self.data.len() + buf.len() > MAX_MESSAGE {
            self.too_large = true;
        } else {
            self.data.extend_from_slice(buf);
        }
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        if self.too_large {
            self.data.clear();
            return mailin::response::NO_STORAGE;
        }
        self.store.push(Mail {
            from: std::mem::take(&mut self.from),
            to: std::mem::take(&mut self.to),
            data: String::from_utf8_lossy(&self.data).into_owned(),
            tls: self.tls.load(Ordering::Relaxed),
        });
        self.data.clear();
        mailin::response::OK
    }
}

async fn serve(shared: Arc<Shared>, stream: TcpStream, peer: IpAddr) {
    let _ = stream.set_nodelay(true);
    let tls = Arc::new(AtomicBool::new(false));
    let conn = Conn {
        store: Arc::clone(&shared.store),
        tls: Arc::clone(&tls),
        from: String::new(),
        to: Vec::new(),
        data: Vec::new(),
        too_large: false,
    };
    let mut smtp = shared.builder.build(peer, conn);
    let result = match (&shared.acceptor, shared.implicit_tls) {
        (Some(acceptor), true) => match acceptor.accept(stream).await {
            Ok(s) => {
                tls.store(true, Ordering::Relaxed);
                talk(&mut smtp, s, true).await.map(|_| ())
            }
            Err(e) => Err(e),
        },
        _ => match talk(&mut smtp, stream, true).await {
            Ok(Some(plain)) => match &shared.acceptor {
                Some(acceptor) => match acceptor.accept(plain).await {
                    Ok(s) => {
                        tls.store(true, Ordering::Relaxed);
                        smtp.tls_active();
                        talk(&mut smtp, s, false).await.map(|_| ())
                    }
                    Err(e) => Err(e),
                },
                None => Ok(()),
            },
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        },
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "smtp connection ended");
    }
}

/// Run the protocol over one stream. Returns the stream when the client asked for
/// STARTTLS, `None` when the conversation ended.
async fn talk<S>(smtp: &mut Smtp<Conn>, stream: S, greet: bool) -> io::Result<Option<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut rd = BufReader::new(stream);
    if greet {
        reply(&mut rd, &smtp.greeting()).await?;
    }
    let mut line = Vec::with_capacity(256);
    loop {
        line.clear();
        let n = tokio::time::timeout(IDLE, (&mut rd).take(MAX_LINE).read_until(b'\n', &mut line))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "idle"))??;
        if n == 0 {
            return Ok(None);
        }
        if line.last() != Some(&b'\n') {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
        }
        let res = smtp.process(&line);
        match res.action {
            Action::NoReply => {}
            Action::Reply => reply(&mut rd, &res).await?,
            Action::Close => {
                reply(&mut rd, &res).await?;
                return Ok(None);
            }
            Action::UpgradeTls => {
                reply(&mut rd, &res).await?;
                return Ok(Some(rd.into_inner()));
            }
        }
    }
}

async fn reply<S>(rd: &mut BufReader<S>, res: &Response) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let buf = res.buffer()?;
    let w = rd.get_mut();
    w.write_all(&buf).await?;
    w.flush().await
}
