//! Where the agent's MQTT broker is: `mqtt://[user:password@]host[:port]`
//! or `mqtts://...` parsed into an [`Endpoint`], and the system's CA
//! bundle for TLS.

use std::fmt;

/// Where an external broker is, from `mqtt://[user:password@]host[:port]`
/// or `mqtts://...` (TLS, verified against the system's CA bundle).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Endpoint {
    /// A name or an IP address; IPv6 in brackets.
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) tls: bool,
    pub(crate) credentials: Option<(String, String)>,
}

impl fmt::Display for Endpoint {
    /// The URL without the password, for logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        write!(f, "{scheme}://{}:{}", self.host, self.port)
    }
}

impl Endpoint {
    pub(crate) fn parse(url: &str) -> Result<Endpoint, String> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("mqtt://") {
            (false, rest)
        } else if let Some(rest) = url.strip_prefix("mqtts://") {
            (true, rest)
        } else {
            return Err("expected mqtt://host:port or mqtts://host:port".into());
        };
        // Nothing may follow the authority but a lone "/".
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains(['/', '?', '#']) {
            return Err("a broker URL has no path or query; write mqtt://host:port".into());
        }
        let (credentials, hostport) = match authority.rsplit_once('@') {
            Some((userinfo, hostport)) => {
                let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                (Some((user.to_string(), password.to_string())), hostport)
            }
            None => (None, authority),
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (addr, after) = v6
                .split_once(']')
                .ok_or("an IPv6 address needs a closing ']'")?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or("expected ':port' after ']'")?),
            };
            (format!("[{addr}]"), port)
        } else {
            match hostport.rsplit_once(':') {
                Some((host, port)) => (host.to_string(), Some(port)),
                None => (hostport.to_string(), None),
            }
        };
        if host.is_empty() || host == "[]" {
            return Err("the broker URL names no host".into());
        }
        let port = match port {
            None if tls => 8883,
            None => 1883,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("{p:?} is not a port number"))?,
        };
        Ok(Endpoint {
            host,
            port,
            tls,
            credentials,
        })
    }
}

/// An IP address as an MQTT client host: IPv6 in brackets, because the
/// client joins host and port with a colon.
pub(super) fn host_text(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// The system's CA certificates (PEM) for `mqtts://`: `SSL_CERT_FILE`, or
/// the bundle of Debian/Ubuntu, Fedora/RHEL or Alpine.
pub(crate) fn system_ca_bundle() -> Result<Vec<u8>, String> {
    let mut candidates: Vec<std::path::PathBuf> = Vec::new();
    if let Some(file) = std::env::var_os("SSL_CERT_FILE") {
        candidates.push(file.into());
    }
    for path in [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/cert.pem",
    ] {
        candidates.push(path.into());
    }
    for path in &candidates {
        if let Ok(pem) = std::fs::read(path) {
            return Ok(pem);
        }
    }
    Err(
        "mqtts:// needs the system CA certificates, found none (install ca-certificates or set SSL_CERT_FILE)"
            .into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(url: &str) -> Endpoint {
        Endpoint::parse(url).unwrap()
    }

    #[test]
    fn broker_urls() {
        assert_eq!(
            endpoint("mqtt://127.0.0.1:1883"),
            Endpoint {
                host: "127.0.0.1".into(),
                port: 1883,
                tls: false,
                credentials: None
            }
        );
        assert_eq!(endpoint("mqtt://broker.local").port, 1883);
        assert_eq!(endpoint("mqtt://broker.local/").host, "broker.local");
        let tls = endpoint("mqtts://broker.example.com");
        assert_eq!((tls.port, tls.tls), (8883, true));
        assert_eq!(tls.to_string(), "mqtts://broker.example.com:8883");
        let v6 = endpoint("mqtt://[::1]:1884");
        assert_eq!((v6.host.as_str(), v6.port), ("[::1]", 1884));
        assert_eq!(endpoint("mqtt://[fe80::1]").port, 1883);
        let auth = endpoint("mqtt://agent:s3cr:et@10.0.0.2:1883");
        assert_eq!(
            auth.credentials,
            Some(("agent".to_string(), "s3cr:et".to_string()))
        );
        assert_eq!(auth.host, "10.0.0.2");
        // The password never reaches the logs.
        assert_eq!(auth.to_string(), "mqtt://10.0.0.2:1883");
    }

    #[test]
    fn bad_broker_urls_say_what_is_wrong() {
        for url in [
            "tcp://h:1",
            "mqtt://",
            "mqtt://:1883",
            "mqtt://h:port",
            "mqtt://h:0",
            "mqtt://h:70000",
            "mqtt://h:1883/path",
            "mqtt://[::1",
            "mqtt://[::1]x",
        ] {
            assert!(Endpoint::parse(url).is_err(), "{url}");
        }
        assert_eq!(
            Endpoint::parse("mqtt://h:port").unwrap_err(),
            "\"port\" is not a port number"
        );
    }
}
