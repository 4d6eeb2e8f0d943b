//! The simulator's thread: its own tokio runtime running the accept loop (one task per
//! connection) and the report scheduler, until the handle asks it to stop.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use super::state::Ismg;
use super::{reports, session, IsmgConfig, IsmgHandle};

pub(crate) fn start(cfg: IsmgConfig) -> io::Result<IsmgHandle> {
    let listener = std::net::TcpListener::bind(cfg.listen)?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.threads.max(1))
        .thread_name("sim-ismg")
        .enable_all()
        .build()?;
    let ismg = Arc::new(Ismg::new(cfg));
    let (stop_tx, mut stop_rx) = watch::channel(false);

    let served = Arc::clone(&ismg);
    let thread = std::thread::Builder::new()
        .name(format!("sim-ismg-{}", addr.port()))
        .spawn(move || {
            runtime.block_on(async move {
                let listener = match TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!(error = %e, "ismg listener unusable");
                        return;
                    }
                };
                tokio::spawn(reports::run(Arc::clone(&served)));
                loop {
                    let accepted = tokio::select! {
                        _ = stop_rx.changed() => return,
                        r = listener.accept() => r,
                    };
                    match accepted {
                        Ok((stream, peer)) => {
                            tokio::spawn(session::serve(Arc::clone(&served), stream, peer));
                        }
                        Err(e) => {
                            // Out of file descriptors and the like: back off, keep serving.
                            tracing::debug!(error = %e, "ismg accept failed");
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
            });
            // Dropping the runtime's tasks closes every connection.
            runtime.shutdown_timeout(Duration::from_millis(200));
        })?;
    Ok(IsmgHandle {
        addr,
        ismg,
        stop: stop_tx,
        thread: Some(thread),
    })
}
