//! The gateway's public base URL and the links built on it. This is the one place that knows
//! both: the engine asks it for a QR code's link once, and the login answer and the
//! `qr_refreshed` event both carry that link; a link page's URL is built here too.

use std::net::SocketAddr;

use uuid::Uuid;
use wagate_core::engine::QrLinks;

use crate::statics;

/// The base every link the gateway hands out starts with, e.g. `https://wa.example.com`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicBase {
    url: String,
}

impl PublicBase {
    /// `configured` (`WAGATE_PUBLIC_URL`) when set, else the address the gateway listens on,
    /// as `localhost` when that is every interface.
    pub fn new(configured: Option<&str>, listening: SocketAddr) -> Self {
        let url = match configured {
            Some(url) => url.trim_end_matches('/').to_string(),
            None if listening.ip().is_unspecified() => {
                format!("http://localhost:{}", listening.port())
            }
            None => format!("http://{listening}"),
        };
        Self { url }
    }

    /// The base, without a trailing slash.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The public URL of the link page of link token `token`.
    pub fn link_page(&self, token: &str) -> String {
        format!("{}{}", self.url, crate::link_page::page_path(token))
    }
}

impl QrLinks for PublicBase {
    fn qr_link(&self, image: Uuid) -> String {
        format!("{}{}", self.url, statics::qr_image_path(image))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configured_base_wins_and_loses_its_trailing_slash() {
        let base = PublicBase::new(
            Some("https://wa.example.com/"),
            "0.0.0.0:3000".parse().unwrap(),
        );
        assert_eq!(base.url(), "https://wa.example.com");
        let image = Uuid::nil();
        assert_eq!(
            base.qr_link(image),
            format!("https://wa.example.com/statics/images/qrcode/scan-qr-{image}.png")
        );
    }

    #[test]
    fn without_one_the_listen_address_is_the_base() {
        let every = PublicBase::new(None, "0.0.0.0:3000".parse().unwrap());
        assert_eq!(every.url(), "http://localhost:3000");
        let one = PublicBase::new(None, "127.0.0.1:4000".parse().unwrap());
        assert_eq!(one.url(), "http://127.0.0.1:4000");
        let v6 = PublicBase::new(None, "[::1]:4000".parse().unwrap());
        assert_eq!(v6.url(), "http://[::1]:4000");
    }
}
