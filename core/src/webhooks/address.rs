//! Where webhooks may go: endpoint URLs are checked when they are set, and every connection
//! is checked again when it is made (a name can resolve elsewhere later).
//!
//! Unless the operator allows private targets, loopback, private, link-local, shared (CGNAT),
//! unspecified, multicast and documentation addresses are refused: a tenant must not be able to
//! make the gateway call into its own network.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::WebhookError;

/// Whether `ip` is an address on the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        // 100.64.0.0/10, shared address space (carrier-grade NAT).
        || (a == 100 && (64..128).contains(&b))
        // 198.18.0.0/15, benchmarking.
        || (a == 198 && (b == 18 || b == 19))
        // 240.0.0.0/4, reserved.
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        // fc00::/7, unique local.
        || (first & 0xfe00) == 0xfc00
        // fe80::/10, link-local.
        || (first & 0xffc0) == 0xfe80
        // 2001:db8::/32, documentation.
        || (first == 0x2001 && ip.segments()[1] == 0x0db8))
}

/// Checks an endpoint URL: http or https, with a host that resolves, and (unless
/// `allow_private`) only to public addresses. Returns it normalised.
pub async fn check_url(raw: &str, allow_private: bool) -> Result<String, WebhookError> {
    let invalid = |reason: &str| WebhookError::InvalidUrl {
        url: raw.to_string(),
        reason: reason.to_string(),
    };
    let url = Url::parse(raw.trim()).map_err(|e| invalid(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("the scheme must be http or https"));
    }
    let host = url
        .host_str()
        .ok_or_else(|| invalid("the URL has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = url
        .port_or_known_default()
        .ok_or_else(|| invalid("the URL has no port"))?;
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| invalid(&format!("host `{host}` does not resolve: {e}")))?
        .collect();
    if addresses.is_empty() {
        return Err(invalid(&format!("host `{host}` resolves to no address")));
    }
    if !allow_private && let Some(private) = addresses.iter().find(|a| !is_public(a.ip())) {
        return Err(WebhookError::PrivateAddress {
            url: raw.to_string(),
            address: private.ip(),
        });
    }
    Ok(url.to_string())
}

/// Refuses a URL whose host is a literal non-public address (the resolver never sees those).
pub fn check_literal(url: &Url) -> Result<(), String> {
    let literal = url
        .host_str()
        .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
        .and_then(|h| h.parse::<IpAddr>().ok());
    match literal {
        Some(ip) if !is_public(ip) => Err(format!(
            "{ip} is not a public address; set WAGATE_WEBHOOK_ALLOW_PRIVATE=true to allow it"
        )),
        _ => Ok(()),
    }
}

/// A resolver for the delivery client that drops non-public addresses, so a name that turns
/// private after its endpoint was checked is still refused.
#[derive(Debug, Clone, Copy, Default)]
pub struct PublicResolver;

impl Resolve for PublicResolver {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_string();
            let public: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| is_public(a.ip()))
                .collect();
            if public.is_empty() {
                return Err(format!(
                    "`{host}` resolves to no public address; set WAGATE_WEBHOOK_ALLOW_PRIVATE=true to allow private ones"
                )
                .into());
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_special_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "224.0.0.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["1.1.1.1", "8.8.8.8", "2606:4700:4700::1111"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[tokio::test]
    async fn loopback_urls_are_refused_unless_allowed() {
        let url = "http://127.0.0.1:9/hook";
        assert!(matches!(
            check_url(url, false).await,
            Err(WebhookError::PrivateAddress { .. })
        ));
        assert_eq!(check_url(url, true).await.unwrap(), url);
    }

    #[tokio::test]
    async fn only_http_urls_with_a_host_are_accepted() {
        for bad in ["ftp://example.com/x", "not a url", "http://"] {
            assert!(
                matches!(
                    check_url(bad, true).await,
                    Err(WebhookError::InvalidUrl { .. })
                ),
                "{bad}"
            );
        }
    }
}
