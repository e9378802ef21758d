//! Webhooks: where the change feed is pushed, and the record of each delivery.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{DomainError, Event, EventType, Kind};

/// A receiver of the feed's events, as stored. The secret never leaves the server after creation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Webhook {
    pub id: String,
    pub url: String,
    pub secret: String,
    /// Component kinds to send; empty means all.
    pub kinds: Vec<Kind>,
    /// Event types to send; empty means all.
    pub types: Vec<EventType>,
    pub created_at: DateTime<Utc>,
    /// The last sequence handled (delivered, given up on or filtered out) as saved: delivery resumes after it, in
    /// order. Saved with every delivery, and past filtered-out events only now and then.
    pub cursor: u64,
}

impl Webhook {
    pub fn wants(&self, event: &Event) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(&event.kind()))
            && (self.types.is_empty() || self.types.contains(&event.draft.event_type))
    }

    pub fn validate(&self) -> Result<(), DomainError> {
        let url = self.url.trim();
        if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() > 2048 {
            return Err(DomainError::new(
                "url",
                "a webhook's URL is http:// or https://, at most 2048 bytes",
            ));
        }
        if self.secret.is_empty() || self.secret.len() > 256 {
            return Err(DomainError::new(
                "secret",
                "a webhook needs a secret of 1 to 256 bytes to sign its deliveries",
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Not yet accepted by the receiver; retried with backoff.
    Pending,
    /// The receiver answered 2xx.
    Delivered,
    /// Every attempt failed; the webhook went on to the next event.
    Failed,
}

/// One event sent (or being sent) to one webhook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    /// `<webhook id>-<sequence>`: the same for every attempt, so receivers can drop repeats.
    pub id: String,
    pub webhook_id: String,
    pub sequence: u64,
    pub event_type: EventType,
    pub status: DeliveryStatus,
    pub attempts: u32,
    pub last_error: Option<String>,
    /// HTTP status of the last answer, if there was one.
    pub last_status: Option<u16>,
    pub created_at: DateTime<Utc>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
}

impl Delivery {
    pub fn new(webhook: &Webhook, event: &Event, now: DateTime<Utc>) -> Self {
        Self {
            id: format!("{}-{}", webhook.id, event.sequence),
            webhook_id: webhook.id.clone(),
            sequence: event.sequence,
            event_type: event.draft.event_type,
            status: DeliveryStatus::Pending,
            attempts: 0,
            last_error: None,
            last_status: None,
            created_at: now,
            last_attempt_at: None,
            next_attempt_at: Some(now),
            delivered_at: None,
        }
    }
}

/// Whether a webhook may not send to `ip` (unless private networks are allowed): loopback, private, link-local,
/// shared, reserved and documentation ranges, and every IPv6 form that embeds an IPv4 address or reaches a
/// local network, so no spelling of an internal address slips through.
pub fn is_forbidden_destination(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => is_forbidden_v4(v4),
        std::net::IpAddr::V6(v6) => is_forbidden_v6(v6),
    }
}

fn is_forbidden_v4(v4: std::net::Ipv4Addr) -> bool {
    let [a, b, c, _] = v4.octets();
    v4.is_loopback()
        || v4.is_private()
        || v4.is_link_local()
        || v4.is_broadcast()
        || v4.is_multicast()
        || v4.is_documentation()
        // 0.0.0.0/8: "this network", which Linux connects to the host itself.
        || a == 0
        // 100.64.0.0/10: carrier-grade NAT, not the public internet either.
        || (a == 100 && (b & 0xc0) == 64)
        // 192.0.0.0/24: IETF protocol assignments (NAT64 discovery, DS-Lite).
        || (a == 192 && b == 0 && c == 0)
        // 192.88.99.0/24: the retired 6to4 relay anycast.
        || (a == 192 && b == 88 && c == 99)
        // 198.18.0.0/15: benchmarking networks.
        || (a == 198 && (b & 0xfe) == 18)
        // 240.0.0.0/4: reserved.
        || a >= 240
}

fn is_forbidden_v6(v6: std::net::Ipv6Addr) -> bool {
    use std::net::Ipv4Addr;
    let s = v6.segments();
    let bits = u128::from(v6);
    let last_v4 = Ipv4Addr::from(bits as u32);
    let in_prefix = |prefix: u128, len: u32| bits >> (128 - len) == prefix >> (128 - len);
    // The unspecified and loopback addresses, and ::a.b.c.d (IPv4-compatible, deprecated and routed nowhere,
    // but some stacks still send it to the embedded IPv4 address): all of ::/96.
    if in_prefix(0, 96) {
        return true;
    }
    // ::ffff:a.b.c.d (IPv4-mapped) and ::ffff:0:a.b.c.d (IPv4-translated) reach the embedded address.
    if in_prefix(0xffff << 32, 96) || in_prefix(0xffff_0000 << 32, 96) {
        return is_forbidden_v4(last_v4);
    }
    // 64:ff9b::/96, well-known NAT64: a DNS64 resolver gives it for public IPv4 hosts, so only the embedded
    // address decides.
    if in_prefix(0x0064_ff9b << 96, 96) {
        return is_forbidden_v4(last_v4);
    }
    // 6to4 (2002::/16) carries its IPv4 address in bits 16-48.
    if s[0] == 0x2002 {
        return is_forbidden_v4(Ipv4Addr::from((bits >> 80) as u32));
    }
    // Teredo (2001::/32): the server's IPv4 address in bits 32-64, the client's inverted in the last 32.
    if s[0] == 0x2001 && s[1] == 0 {
        let server = Ipv4Addr::from((bits >> 64) as u32);
        let client = Ipv4Addr::from(!(bits as u32));
        return is_forbidden_v4(server) || is_forbidden_v4(client);
    }
    // 64:ff9b:1::/48, local-use NAT64: translates to whatever the local network chose.
    in_prefix(0x0064_ff9b_0001 << 80, 48)
        // 100::/64: discard-only.
        || in_prefix(0x0100 << 112, 64)
        // 2001:2::/48: benchmarking; 2001:10::/28 and 2001:20::/28: ORCHID, not routable.
        || in_prefix(0x2001_0002 << 96, 48)
        || in_prefix(0x2001_0010 << 96, 28)
        || in_prefix(0x2001_0020 << 96, 28)
        // 2001:db8::/32 and 3fff::/20: documentation.
        || in_prefix(0x2001_0db8 << 96, 32)
        || in_prefix(0x3fff << 112, 20)
        // fc00::/7: unique local; fe80::/10: link-local; fec0::/10: site-local (deprecated, still routed
        // inside some sites); ff00::/8: multicast.
        || (s[0] & 0xfe00) == 0xfc00
        || (s[0] & 0xffc0) == 0xfe80
        || (s[0] & 0xffc0) == 0xfec0
        || (s[0] & 0xff00) == 0xff00
}

#[cfg(test)]
mod tests {
    use super::is_forbidden_destination;

    fn forbidden(ip: &str) -> bool {
        is_forbidden_destination(ip.parse().unwrap())
    }

    #[test]
    fn private_and_special_ipv4_ranges_are_refused() {
        for ip in [
            "127.0.0.1",
            "127.255.0.9",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "0.1.2.3",
            "100.64.0.1",
            "100.127.255.255",
            "192.0.0.170",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "198.18.0.1",
            "198.19.255.255",
            "192.88.99.1",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
        ] {
            assert!(forbidden(ip), "{ip} must be refused");
        }
    }

    #[test]
    fn public_ipv4_addresses_are_allowed() {
        for ip in [
            "93.184.216.34",
            "1.1.1.1",
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.1",
            "172.32.0.1",
            "198.20.0.1",
            "223.255.255.254",
        ] {
            assert!(!forbidden(ip), "{ip} must be allowed");
        }
    }

    #[test]
    fn ipv6_loopback_unspecified_and_ipv4_compatible_are_refused() {
        for ip in [
            "::",
            "::1",
            "::127.0.0.1",
            "::10.0.0.1",
            "::8.8.8.8",
            "::ffff",
        ] {
            assert!(forbidden(ip), "{ip} must be refused");
        }
    }

    #[test]
    fn ipv4_mapped_and_translated_follow_the_embedded_address() {
        for ip in [
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:0:127.0.0.1",
            "::ffff:0:192.168.0.1",
        ] {
            assert!(forbidden(ip), "{ip} must be refused");
        }
        for ip in ["::ffff:93.184.216.34", "::ffff:0:1.1.1.1"] {
            assert!(!forbidden(ip), "{ip} must be allowed");
        }
    }

    #[test]
    fn nat64_follows_the_embedded_address_and_local_use_nat64_is_refused() {
        for ip in [
            "64:ff9b::127.0.0.1",
            "64:ff9b::10.1.1.1",
            "64:ff9b::169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::1",
            "64:ff9b:1:ffff::93.184.216.34",
        ] {
            assert!(forbidden(ip), "{ip} must be refused");
        }
        for ip in ["64:ff9b::93.184.216.34", "64:ff9b::101:101"] {
            assert!(!forbidden(ip), "{ip} must be allowed");
        }
    }

    #[test]
    fn six_to_four_follows_the_embedded_address() {
        // 2002:AABB:CCDD::/48 carries AA.BB.CC.DD.
        for ip in [
            "2002:7f00:1::",
            "2002:a00:1::1",
            "2002:c0a8:101::5",
            "2002:a9fe:a9fe::1",
        ] {
            assert!(forbidden(ip), "{ip} must be refused");
        }
        for ip in ["2002:5db8:d822::1", "2002:101:101::"] {
            assert!(!forbidden(ip), "{ip} must be allowed");
        }
    }

    #[test]
    fn teredo_follows_the_inverted_client_address() {
        // Client 127.0.0.1 inverted is 80ff:fffe; client 10.0.0.1 is f5ff:fffe; server 65.54.227.120 is 4136:e378.
        for ip in [
            "2001:0:4136:e378:8000:63bf:80ff:fffe",
            "2001:0:4136:e378:8000:63bf:f5ff:fffe",
            // A private server.
            "2001:0:a00:1:8000:63bf:a247:27dd",
        ] {
            assert!(forbidden(ip), "{ip} must be refused");
        }
        // Client 93.184.216.34 inverted is a247:27dd.
        assert!(!forbidden("2001:0:4136:e378:8000:63bf:a247:27dd"));
    }

    #[test]
    fn local_reserved_and_documentation_ipv6_ranges_are_refused() {
        for ip in [
            "fe80::1",
            "febf::1",
            "fec0::1",
            "feff::1",
            "fc00::1",
            "fd12:3456::1",
            "ff02::1",
            "ff0e::1",
            "2001:db8::1",
            "3fff::1",
            "100::1",
            "2001:2::1",
            "2001:10::1",
            "2001:20::1",
        ] {
            assert!(forbidden(ip), "{ip} must be refused");
        }
    }

    #[test]
    fn public_ipv6_addresses_are_allowed() {
        for ip in [
            "2606:4700:4700::1111",
            "2001:4860:4860::8888",
            "2a00:1450:4001::1",
            "100:0:0:1::1",
            "2001:1::1",
            "4000::1",
        ] {
            assert!(!forbidden(ip), "{ip} must be allowed");
        }
    }
}
