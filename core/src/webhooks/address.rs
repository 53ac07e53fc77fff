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

/// Whether `ip` is an address on the public internet. An IPv6 address that carries an IPv4
/// address (mapped, compatible, translated, NAT64, 6to4, Teredo) is judged by that address too:
/// `[::127.0.0.1]` reaches loopback wherever the host stack or a translator unwraps it.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6) && embedded_ipv4(v6).into_iter().all(is_public_v4),
    }
}

/// The IPv4 addresses an IPv6 address carries, by the prefixes that embed one.
fn embedded_ipv4(ip: Ipv6Addr) -> Vec<Ipv4Addr> {
    let s = ip.segments();
    let v4 = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    match s {
        // ::a.b.c.d (compatible, deprecated), ::ffff:a.b.c.d (mapped), ::ffff:0:a.b.c.d
        // (translated, RFC 2765).
        [0, 0, 0, 0, 0, 0 | 0xffff, hi, lo] | [0, 0, 0, 0, 0xffff, 0, hi, lo] => vec![v4(hi, lo)],
        // 64:ff9b::/96, NAT64 (RFC 6052).
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => vec![v4(hi, lo)],
        // 2002::/16, 6to4: the IPv4 address follows the prefix.
        [0x2002, hi, lo, ..] => vec![v4(hi, lo)],
        // 2001::/32, Teredo: the server's address, then the client's, bits inverted.
        [0x2001, 0, server_hi, server_lo, _, _, client_hi, client_lo] => {
            vec![v4(server_hi, server_lo), v4(!client_hi, !client_lo)]
        }
        _ => Vec::new(),
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
        || (first == 0x2001 && ip.segments()[1] == 0x0db8)
        // 64:ff9b:1::/48, NAT64 for local use (RFC 8215).
        || (first == 0x64 && ip.segments()[1] == 0xff9b && ip.segments()[2] == 1))
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

    #[test]
    fn ipv6_forms_that_carry_a_private_ipv4_address_are_not_public() {
        for ip in [
            // IPv4-compatible, in two spellings.
            "::127.0.0.1",
            "0::127.0.0.1",
            "::10.0.0.1",
            // IPv4-mapped and IPv4-translated.
            "::ffff:192.168.1.1",
            "::ffff:0:127.0.0.1",
            // NAT64, well-known and local-use prefixes.
            "64:ff9b::127.0.0.1",
            "64:ff9b:1::a00:1",
            // 6to4 of 127.0.0.1 and 10.1.2.3.
            "2002:7f00:1::1",
            "2002:a01:203::",
            // Teredo: a client at 127.0.0.1 (inverted bits), a server at 10.0.0.1.
            "2001:0:4136:e378:8000:63bf:80ff:fffe",
            "2001:0:a00:1:8000:63bf:3fff:fdd2",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "::ffff:8.8.8.8",
            "64:ff9b::8.8.8.8",
            "2002:808:808::1",
            "2001:0:4136:e378:8000:63bf:f7f7:f7f7",
        ] {
            assert!(
                is_public(ip.parse().unwrap()),
                "{ip} carries a public address"
            );
        }
    }

    #[tokio::test]
    async fn urls_with_embedded_private_ipv4_addresses_are_refused() {
        for url in [
            "http://[::127.0.0.1]:9/",
            "http://[0::127.0.0.1]:9/",
            "http://[::ffff:0:127.0.0.1]:9/",
            "http://[64:ff9b::7f00:1]:9/",
            "http://[2002:7f00:1::1]:9/",
            "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]:9/",
        ] {
            assert!(check_url(url, false).await.is_err(), "{url}");
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
