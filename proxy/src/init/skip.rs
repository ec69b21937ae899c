//! The values the skip flags take: ports and port ranges, networks. Parsed
//! strictly and printed in iptables' spelling, so a bad flag is a usage
//! error before any rule is written.

use super::rules::Family;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// A port or an inclusive range, `8080` or `8000-8100` (`8000:8100` too).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub fn single(port: u16) -> PortRange {
        PortRange {
            first: port,
            last: port,
        }
    }

    /// How many of multiport's 15 slots this takes.
    pub(super) fn slots(self) -> usize {
        if self.first == self.last {
            1
        } else {
            2
        }
    }
}

impl FromStr for PortRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let port = |p: &str| match p.trim().parse::<u16>() {
            Ok(0) | Err(_) => Err(format!(
                "`{s}` is not a port (1-65535) or a range like 8000-8100"
            )),
            Ok(n) => Ok(n),
        };
        let range = match s.split_once(['-', ':']) {
            Some((a, b)) => PortRange {
                first: port(a)?,
                last: port(b)?,
            },
            None => PortRange::single(port(s)?),
        };
        if range.first > range.last {
            return Err(format!("`{s}`: the range is empty (first > last)"));
        }
        Ok(range)
    }
}

impl fmt::Display for PortRange {
    /// iptables' spelling: `8080` or `8000:8100`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}:{}", self.first, self.last)
        }
    }
}

/// A network, `10.0.0.0/8` or `fd00::/8`; a bare address is a /32 or /128.
/// Host bits are cleared, as iptables-save prints them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn family(&self) -> Family {
        match self.addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let bad = || format!("`{s}` is not a CIDR like 10.0.0.0/8 or fd00::/8");
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
            None => max,
        };
        let addr = match addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
        };
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// A comma-separated list. Empty items are ignored, so an empty value (an
/// injector's `REMORA_INIT_SKIP_INBOUND_PORTS: ""`) means none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct List<T>(pub Vec<T>);

impl<T: FromStr<Err = String>> FromStr for List<T> {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.split(',')
            .filter(|item| !item.trim().is_empty())
            .map(str::parse)
            .collect::<Result<_, _>>()
            .map(List)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ports_and_ranges() {
        assert_eq!("80".parse::<PortRange>(), Ok(PortRange::single(80)));
        let range = PortRange {
            first: 8000,
            last: 8100,
        };
        assert_eq!(" 8000-8100 ".parse::<PortRange>(), Ok(range));
        assert_eq!("8000:8100".parse::<PortRange>(), Ok(range));
        assert_eq!(range.to_string(), "8000:8100");
        for bad in ["0", "65536", "http", "9-8", "1-", ""] {
            assert!(bad.parse::<PortRange>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn parses_cidrs_and_clears_host_bits() {
        let c: Cidr = "10.9.8.7/16".parse().unwrap();
        assert_eq!(c.to_string(), "10.9.0.0/16");
        assert_eq!(c.family(), Family::V4);
        assert_eq!(
            "10.1.1.1".parse::<Cidr>().unwrap().to_string(),
            "10.1.1.1/32"
        );
        assert_eq!(
            "0.0.0.0/0".parse::<Cidr>().unwrap().to_string(),
            "0.0.0.0/0"
        );
        let v6: Cidr = "fd00:1::5/64".parse().unwrap();
        assert_eq!(
            (v6.to_string().as_str(), v6.family()),
            ("fd00:1::/64", Family::V6)
        );
        assert_eq!("::1".parse::<Cidr>().unwrap().to_string(), "::1/128");
        for bad in [
            "10.0.0.0/33",
            "fd00::/129",
            "10.0.0/8",
            "example.com/8",
            "10.0.0.0/x",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn lists_ignore_empty_items() {
        let list: List<PortRange> = "22, 9000-9001,,".parse().unwrap();
        assert_eq!(list.0.len(), 2);
        assert_eq!("".parse::<List<Cidr>>(), Ok(List(Vec::new())));
        let err = "22,http".parse::<List<PortRange>>().unwrap_err();
        assert!(err.contains("`http`"), "{err}");
    }
}
