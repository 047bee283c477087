//! The `Vip` value: a floating address with its prefix length.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use crate::VipError;

/// A floating address as configured: `192.168.1.250` (meaning /32), `2001:db8::10` (meaning /128), or with an
/// explicit prefix such as `192.168.1.250/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Vip {
    addr: IpAddr,
    prefix_len: u8,
}

impl Vip {
    /// A host VIP: /32 for IPv4, /128 for IPv6.
    pub fn host(addr: IpAddr) -> Result<Self, VipError> {
        let prefix_len = if addr.is_ipv4() { 32 } else { 128 };
        Self::new(addr, prefix_len)
    }

    /// A VIP with an explicit prefix length (1..=32 for IPv4, 1..=128 for IPv6).
    pub fn new(addr: IpAddr, prefix_len: u8) -> Result<Self, VipError> {
        let invalid = |reason| VipError::InvalidVip {
            input: format!("{addr}/{prefix_len}"),
            reason,
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix_len == 0 || prefix_len > max {
            return Err(invalid(if addr.is_ipv4() {
                "IPv4 prefix length must be 1..=32"
            } else {
                "IPv6 prefix length must be 1..=128"
            }));
        }
        if addr.is_unspecified() {
            return Err(invalid("the unspecified address cannot float"));
        }
        if addr.is_multicast() {
            return Err(invalid("a multicast address cannot be a VIP"));
        }
        if let IpAddr::V4(v4) = addr
            && v4.is_broadcast()
        {
            return Err(invalid("the broadcast address cannot be a VIP"));
        }
        Ok(Self { addr, prefix_len })
    }

    /// The address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length given to the kernel.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }
}

impl fmt::Display for Vip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl FromStr for Vip {
    type Err = VipError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |reason| VipError::InvalidVip {
            input: s.to_owned(),
            reason,
        };
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| invalid("not an IPv4 or IPv6 address"))?;
        match prefix {
            None => Self::host(addr),
            Some(prefix) => {
                let prefix_len: u8 = prefix
                    .trim()
                    .parse()
                    .map_err(|_| invalid("prefix length is not a number"))?;
                Self::new(addr, prefix_len)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_default_and_explicit_prefixes() {
        let v: Vip = "192.168.1.250".parse().unwrap();
        assert_eq!(v.prefix_len(), 32);
        assert_eq!(v.to_string(), "192.168.1.250/32");
        let v: Vip = "192.168.1.250/24".parse().unwrap();
        assert_eq!(v.prefix_len(), 24);
        let v: Vip = "2001:db8::10".parse().unwrap();
        assert_eq!(v.prefix_len(), 128);
        assert_eq!(v.to_string(), "2001:db8::10/128");
        let v: Vip = "2001:db8::10/64".parse().unwrap();
        assert_eq!(v.prefix_len(), 64);
    }

    #[test]
    fn rejects_bad_vips() {
        for bad in [
            "",
            "1.2.3",
            "1.2.3.4/33",
            "1.2.3.4/0",
            "1.2.3.4/x",
            "::1/129",
            "0.0.0.0",
            "::",
            "224.0.0.1",
            "ff02::1",
            "255.255.255.255",
            "1.2.3.4/",
        ] {
            let err = bad.parse::<Vip>().unwrap_err();
            assert!(matches!(err, VipError::InvalidVip { .. }), "{bad}: {err}");
            assert!(err.to_string().contains("invalid VIP"), "{err}");
        }
    }
}
