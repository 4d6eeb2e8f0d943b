//! TLS for the simulators' servers: a fresh self-signed certificate per server.

use std::io;
use std::sync::Arc;

use tokio_rustls::TlsAcceptor;

/// A TLS acceptor with a fresh self-signed certificate for `hostname`, `localhost` and
/// `127.0.0.1`, and that certificate in PEM (for clients to trust).
pub(crate) fn self_signed(hostname: &str) -> io::Result<(TlsAcceptor, String)> {
    let names = vec![
        hostname.to_owned(),
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
    ];
    let certified = rcgen::generate_simple_self_signed(names).map_err(io::Error::other)?;
    let pem = certified.cert.pem();
    let cert = certified.cert.der().clone();
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der());
    // An explicit provider: the process may have several compiled in.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key.into())
        .map_err(io::Error::other)?;
    Ok((TlsAcceptor::from(Arc::new(config)), pem))
}
