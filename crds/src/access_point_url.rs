//! The OMS access point URL, `oms:<driver>://[account@]host:port[,host:port...]/<region>`,
//! written into `MessagingAccessPoint.status.accessPoint` and the binding Secret.

use std::fmt;
use std::str::FromStr;

/// A parsed OMS access point URL. The region is always present.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessPointUrl {
    /// Driver name, e.g. `kafka`.
    pub driver: String,
    /// Optional account (user or tenant id).
    pub account: Option<String>,
    /// One or more `(host, port)` pairs.
    pub hosts: Vec<(String, u16)>,
    /// Region, e.g. `eu-west-1`.
    pub region: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UrlError {
    #[error("access point URL must start with oms:<driver>://, got {0:?}")]
    Scheme(String),
    #[error("access point URL must end with /<region>, got {0:?}")]
    Region(String),
    #[error("access point URL needs at least one host:port, got {0:?}")]
    NoHosts(String),
    #[error("{0:?} is not host:port with a port from 1 to 65535")]
    HostPort(String),
}

impl fmt::Display for AccessPointUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "oms:{}://", self.driver)?;
        if let Some(account) = &self.account {
            write!(f, "{account}@")?;
        }
        for (i, (host, port)) in self.hosts.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{host}:{port}")?;
        }
        write!(f, "/{}", self.region)
    }
}

impl FromStr for AccessPointUrl {
    type Err = UrlError;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        let scheme_err = || UrlError::Scheme(url.to_owned());
        let rest = url.strip_prefix("oms:").ok_or_else(scheme_err)?;
        let (driver, rest) = rest.split_once("://").ok_or_else(scheme_err)?;
        if driver.is_empty() || !driver.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()) {
            return Err(scheme_err());
        }
        let (authority, region) = rest.rsplit_once('/').ok_or_else(|| UrlError::Region(url.to_owned()))?;
        if region.is_empty() {
            return Err(UrlError::Region(url.to_owned()));
        }
        let (account, hosts) = match authority.rsplit_once('@') {
            Some((account, hosts)) => (Some(account.to_owned()), hosts),
            None => (None, authority),
        };
        if hosts.is_empty() {
            return Err(UrlError::NoHosts(url.to_owned()));
        }
        let hosts = hosts.split(',').map(parse_host_port).collect::<Result<Vec<_>, _>>()?;
        Ok(AccessPointUrl { driver: driver.to_owned(), account, hosts, region: region.to_owned() })
    }
}

/// Parses `host:port`; IPv6 hosts are bracketed (`[::1]:9092`).
pub fn parse_host_port(input: &str) -> Result<(String, u16), UrlError> {
    let err = || UrlError::HostPort(input.to_owned());
    let (host, port) = input.rsplit_once(':').ok_or_else(err)?;
    let port: u16 = port.parse().map_err(|_| err())?;
    if host.is_empty() || port == 0 {
        return Err(err());
    }
    Ok((host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_with_account_and_several_hosts_round_trips() {
        let text = "oms:kafka://alice@b-0.k.acme.svc:9092,b-1.k.acme.svc:9092/eu-west-1";
        let url: AccessPointUrl = text.parse().expect("valid URL");
        assert_eq!(url.driver, "kafka");
        assert_eq!(url.account.as_deref(), Some("alice"));
        assert_eq!(url.hosts, vec![("b-0.k.acme.svc".into(), 9092), ("b-1.k.acme.svc".into(), 9092)]);
        assert_eq!(url.region, "eu-west-1");
        assert_eq!(url.to_string(), text);
    }

    #[test]
    fn url_without_account_and_with_ipv6_host_parses() {
        let url: AccessPointUrl = "oms:nats://[::1]:4222/local".parse().expect("valid URL");
        assert_eq!(url.account, None);
        assert_eq!(url.hosts, vec![("[::1]".into(), 4222)]);
    }

    #[test]
    fn malformed_urls_name_what_is_missing() {
        assert!(matches!("kafka://h:1/r".parse::<AccessPointUrl>(), Err(UrlError::Scheme(_))));
        assert!(matches!("oms:kafka://h:1".parse::<AccessPointUrl>(), Err(UrlError::Region(_))));
        assert!(matches!("oms:kafka://h:1/".parse::<AccessPointUrl>(), Err(UrlError::Region(_))));
        assert!(matches!("oms:kafka:///r".parse::<AccessPointUrl>(), Err(UrlError::NoHosts(_))));
        assert!(matches!("oms:kafka://h/r".parse::<AccessPointUrl>(), Err(UrlError::HostPort(_))));
        assert!(matches!("oms:kafka://h:0/r".parse::<AccessPointUrl>(), Err(UrlError::HostPort(_))));
    }
}
