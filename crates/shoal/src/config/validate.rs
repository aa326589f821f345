//! The rules a configuration must meet beyond its types, each refusal naming its key.

use super::{Config, ConfigError, MAX_NUMWANT};

/// The shortest admin token accepted on a bind that is not loopback.
const MIN_TOKEN: usize = 16;

impl Config {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        self.validate_listeners()?;
        self.validate_announce()?;
        self.validate_ws()?;
        for (key, list) in [
            ("clients.allow", &self.clients.allow),
            ("clients.deny", &self.clients.deny),
        ] {
            if let Some(e) = list.iter().find_map(|p| super::valid_prefix(p).err()) {
                return bad(key, e);
            }
        }
        if self.cluster.enabled() {
            self.validate_cluster()?;
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return bad(
                "log.level",
                format!(
                    "'{}' is not a log filter such as info or shoal=debug",
                    self.log.level
                ),
            );
        }
        Ok(())
    }

    fn validate_listeners(&self) -> Result<(), ConfigError> {
        if !(8192..=1 << 20).contains(&self.http.max_header_bytes) {
            return bad(
                "http.max_header_bytes",
                format!(
                    "{} is outside 8192..=1048576 (8192 is the HTTP library's floor)",
                    self.http.max_header_bytes
                ),
            );
        }
        for (section, cert, key) in [
            ("http", &self.http.tls_cert_path, &self.http.tls_key_path),
            ("api", &self.api.tls_cert_path, &self.api.tls_key_path),
        ] {
            if cert.is_none() != key.is_none() {
                let missing = if cert.is_none() {
                    "tls_cert_path"
                } else {
                    "tls_key_path"
                };
                return bad(
                    &format!("{section}.{missing}"),
                    format!(
                        "must be set together with {section}.tls_cert_path and {section}.tls_key_path"
                    ),
                );
            }
        }
        if self.api.token.expose().is_empty() && !self.api.bind.ip().is_loopback() {
            return bad(
                "api.token",
                format!(
                    "is empty while api.bind ({}) is not a loopback address; set a token (SHOAL_API__TOKEN) or bind to 127.0.0.1",
                    self.api.bind
                ),
            );
        }
        if self
            .api
            .token
            .expose()
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            return bad(
                "api.token",
                "must not contain whitespace or control characters".into(),
            );
        }
        if let Some(any) = self
            .http
            .trusted_proxies
            .iter()
            .find(|n| n.prefix_len() == 0)
            && !self.http.trust_every_address
        {
            return bad(
                "http.trusted_proxies",
                format!(
                    "{any} trusts every address: any client could name any other in X-Forwarded-For or a PROXY header; list your proxies' addresses, or set http.trust_every_address = true if clients reach Shoal only through them"
                ),
            );
        }
        let exposed = !self.api.bind.ip().is_loopback();
        if exposed
            && !self.api.token.expose().is_empty()
            && self.api.token.expose().len() < MIN_TOKEN
        {
            return bad(
                "api.token",
                format!(
                    "is shorter than {MIN_TOKEN} characters while api.bind ({}) is not a loopback address; use a long random token, e.g. openssl rand -hex 24",
                    self.api.bind
                ),
            );
        }
        if let Some(h) = self.api.hosts.iter().find(|h| {
            h.is_empty()
                || !h
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        }) {
            return bad(
                "api.hosts",
                format!("{h:?} is not a host name (letters, digits, '.' and '-'; no port)"),
            );
        }
        Ok(())
    }

    /// What is allowed but worth saying at start.
    pub fn warnings(&self) -> Vec<String> {
        let mut said = Vec::new();
        if !self.api.bind.ip().is_loopback() && self.api.tls_cert_path.is_none() {
            said.push(format!(
                "api.bind ({}) is not a loopback address and the admin API has no TLS: its token travels in clear; set api.tls_cert_path and api.tls_key_path",
                self.api.bind
            ));
        }
        if self.http.trust_every_address {
            said.push(
                "http.trust_every_address is on: every connection may name its client".into(),
            );
        }
        said
    }

    fn validate_announce(&self) -> Result<(), ConfigError> {
        let a = &self.announce;
        if a.min_interval > a.interval.get() {
            return bad(
                "announce.min_interval",
                format!(
                    "{} is larger than announce.interval ({})",
                    a.min_interval, a.interval
                ),
            );
        }
        if !(0.0..=1.0).contains(&a.interval_jitter) {
            return bad(
                "announce.interval_jitter",
                format!(
                    "{} is outside 0.0..=1.0 (0.1 adds up to 10%)",
                    a.interval_jitter
                ),
            );
        }
        let longest = f64::from(a.interval.get()) * (1.0 + a.interval_jitter);
        if f64::from(a.peer_timeout) <= longest {
            return bad(
                "announce.peer_timeout",
                format!(
                    "{} must exceed the longest interval an answer may give ({longest:.0} s with announce.interval_jitter), or peers expire between announces",
                    a.peer_timeout
                ),
            );
        }
        if a.peer_timeout <= a.interval.get() {
            return bad(
                "announce.peer_timeout",
                format!(
                    "{} must exceed announce.interval ({}), or every peer expires between announces",
                    a.peer_timeout, a.interval
                ),
            );
        }
        if a.max_numwant.get() > MAX_NUMWANT {
            return bad(
                "announce.max_numwant",
                format!(
                    "{} is more than {MAX_NUMWANT}, the most IPv6 peers one UDP answer can carry",
                    a.max_numwant
                ),
            );
        }
        Ok(())
    }
}

/// A refused value, named by its key.
pub(super) fn bad(key: &str, message: String) -> Result<(), ConfigError> {
    Err(ConfigError::BadValue {
        key: key.into(),
        origin: String::new(),
        message,
    })
}
