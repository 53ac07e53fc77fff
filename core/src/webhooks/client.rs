//! The HTTP client that delivers webhooks: no redirects, addresses checked at connection time
//! unless private targets are allowed, idle connections kept per endpoint, HTTP/2 to HTTPS
//! receivers that offer it (ALPN), and the operator's own certificate authorities trusted
//! beside the public ones.

use std::sync::Arc;

use reqwest::Certificate;

use super::{PublicResolver, WebhookConfig, WebhookError};

/// The certificates of a PEM bundle (`-----BEGIN CERTIFICATE-----` blocks), for
/// [`WebhookConfig::trusted_roots`]; refuses a bundle that holds none.
pub fn trusted_roots_from_pem(pem: &[u8]) -> Result<Vec<Certificate>, WebhookError> {
    let roots =
        Certificate::from_pem_bundle(pem).map_err(|e| WebhookError::CaBundle(e.to_string()))?;
    if roots.is_empty() {
        return Err(WebhookError::CaBundle(
            "it holds no `-----BEGIN CERTIFICATE-----` block".into(),
        ));
    }
    Ok(roots)
}

/// The client every attempt of a dispatcher goes through.
pub(super) fn delivery_client(config: &WebhookConfig) -> Result<reqwest::Client, WebhookError> {
    let mut builder = reqwest::Client::builder()
        .timeout(config.timeout)
        .connect_timeout(config.timeout)
        // A redirect could lead anywhere, private addresses included.
        .redirect(reqwest::redirect::Policy::none())
        // Over HTTP/1.1 an attempt in flight holds a connection; HTTP/2 shares one.
        .pool_max_idle_per_host(config.max_in_flight_per_endpoint)
        .user_agent(concat!("wagate/", env!("CARGO_PKG_VERSION")));
    for root in &config.trusted_roots {
        builder = builder.add_root_certificate(root.clone());
    }
    if !config.allow_private {
        builder = builder.dns_resolver(Arc::new(PublicResolver));
    }
    builder
        .build()
        .map_err(|e| WebhookError::Client(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_without_certificates_is_refused() {
        let refused = trusted_roots_from_pem(b"not a certificate\n").unwrap_err();
        assert!(
            refused.to_string().contains("BEGIN CERTIFICATE"),
            "{refused}"
        );
    }

    #[test]
    fn a_broken_certificate_block_is_refused() {
        let broken = b"-----BEGIN CERTIFICATE-----\n%%%%\n-----END CERTIFICATE-----\n";
        assert!(trusted_roots_from_pem(broken).is_err());
    }
}
