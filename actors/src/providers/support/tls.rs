//! TLS for provider calls: rustls with the ring provider, the system's roots, and a
//! channel's extra roots (`settings.tls_ca_file`).

use crate::providers::contract::SettingsError;

/// Installs rustls' ring provider as the process default, which HTTPS clients need
/// before they are built. Another component may have installed one already, which is as
/// good.
pub fn init() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The certificates of a PEM file of extra trusted roots (`settings.tls_ca_file`).
pub fn roots(path: &std::path::Path) -> Result<Vec<reqwest::Certificate>, SettingsError> {
    let pem =
        std::fs::read(path).map_err(|e| field(format!("cannot read {}: {e}", path.display())))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| field(format!("{} is not PEM certificates: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(field(format!("{} holds no certificate", path.display())));
    }
    Ok(certs)
}

fn field(message: String) -> SettingsError {
    SettingsError::new("settings.tls_ca_file", message)
}
