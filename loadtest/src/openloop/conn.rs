//! One keep-alive HTTP/1.1 connection per worker, driven by `hyper` directly (no pool), so
//! that the generator controls exactly how many connections carry the load.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use super::Endpoint;

/// One keep-alive HTTP/1.1 connection; its driver task ends with it.
pub(crate) struct Conn {
    sender: SendRequest<Full<Bytes>>,
    driver: JoinHandle<()>,
}

impl Conn {
    pub(super) async fn open(ep: &Endpoint) -> Result<Conn, String> {
        let stream = TcpStream::connect(ep.addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        stream
            .set_nodelay(true)
            .map_err(|e| format!("nodelay: {e}"))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn { sender, driver })
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// Sends one request on the worker's connection, opening a new one if it was closed.
pub(crate) async fn exchange(
    conn: &mut Option<Conn>,
    ep: &Endpoint,
    req: Request<Full<Bytes>>,
) -> Result<(u16, Bytes), String> {
    if conn.as_ref().is_none_or(|c| c.sender.is_closed()) {
        *conn = Some(Conn::open(ep).await?);
    }
    let Some(c) = conn.as_mut() else {
        return Err("no connection".to_owned());
    };
    c.sender
        .ready()
        .await
        .map_err(|e| format!("connection not ready: {e}"))?;
    let resp = c
        .sender
        .send_request(req)
        .await
        .map_err(|e| format!("send: {e}"))?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("read body: {e}"))?
        .to_bytes();
    Ok((status, body))
}
