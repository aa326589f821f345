use std::fmt;
use std::path::PathBuf;

use crate::StoreError;

/// A database URL whose password never reaches `Debug`, `Display` or an error message.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
    MySql,
}

impl DatabaseUrl {
    pub fn parse(url: &str) -> Result<Self, StoreError> {
        let u = DatabaseUrl(url.to_string());
        u.backend()?;
        Ok(u)
    }

    pub fn backend(&self) -> Result<Backend, StoreError> {
        let scheme = self.0.split(':').next().unwrap_or("");
        match scheme {
            "sqlite" => Ok(Backend::Sqlite),
            "postgres" | "postgresql" => Ok(Backend::Postgres),
            "mysql" | "mariadb" => Ok(Backend::MySql),
            _ if !self.0.contains(':') => Err(StoreError::Url(format!(
                "'{}' has no scheme; use sqlite://path/to/file.db, postgresql://user:password@host/db or mysql://user:password@host/db",
                self.redacted()
            ))),
            other => Err(StoreError::Url(format!(
                "unknown scheme '{other}' (supported: sqlite, postgres, postgresql, mysql, mariadb)"
            ))),
        }
    }

    /// The URL itself, for the driver. Never log or print this.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with its secrets replaced by `***` (see [`redact_url`]).
    pub fn redacted(&self) -> String {
        redact_url(&self.0)
    }

    /// For `sqlite:` URLs, the database file (None for in-memory databases).
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        let rest = self
            .0
            .strip_prefix("sqlite://")
            .or_else(|| self.0.strip_prefix("sqlite:"))?;
        let path = rest.split('?').next().unwrap_or("");
        if path.is_empty() || path == ":memory:" {
            return None;
        }
        Some(PathBuf::from(path))
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({:?})", self.redacted())
    }
}

/// The URL with its secrets replaced by `***`: the password of the user info and the
/// `password`/`sslpassword` query parameters. Read from a parsed URL, so a password holding
/// `/`, `?` or `@` cannot shift what is masked; a URL that does not parse is not shown at all.
pub fn redact_url(url: &str) -> String {
    if url.is_empty() {
        // No URL (an unset optional one) holds no secret, and must read back as none.
        return String::new();
    }
    let scheme = url.split(':').next().unwrap_or("");
    if scheme == "sqlite" && !url.contains("password") {
        // A file path carries no secret, and url::Url would rewrite its spelling.
        return url.to_string();
    }
    let Ok(mut u) = ::url::Url::parse(url) else {
        return format!("<{scheme} url that does not parse; not shown>");
    };
    if u.password().is_some() && u.set_password(Some("***")).is_err() {
        return format!("<{scheme} url; not shown>");
    }
    if u.query().is_some() {
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .map(|(k, v)| {
                let secret = ["password", "sslpassword"].contains(&k.to_ascii_lowercase().as_str());
                (
                    k.into_owned(),
                    if secret { "***".into() } else { v.into_owned() },
                )
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
    }
    u.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        let u = DatabaseUrl("postgresql://shoal:s3cret@db:5432/shoal?sslmode=disable".into());
        for shown in [u.redacted(), format!("{u:?}"), format!("{u}")] {
            assert!(!shown.contains("s3cret"), "{shown}");
            assert!(shown.contains("shoal:***@db:5432/shoal"), "{shown}");
        }
        assert_eq!(
            DatabaseUrl("sqlite://data/shoal.db".into()).redacted(),
            "sqlite://data/shoal.db"
        );
        assert_eq!(redact_url(""), "", "no URL stays no URL, so it loads back");
    }

    #[test]
    fn passwords_in_parameters_and_odd_passwords_never_show() {
        for (url, secret) in [
            (
                "postgresql://127.0.0.1:9/db?user=u&password=hunter2",
                "hunter2",
            ),
            (
                "postgresql://127.0.0.1:9/db?sslpassword=hunter2&sslmode=require",
                "hunter2",
            ),
            ("mysql://u:PassWord@h/db?PASSWORD=hunter2", "hunter2"),
            ("postgresql://u:hun%2Fter%3F2@h/db", "hun%2Fter%3F2"),
            // Not a URL once the password holds a raw '/' or '?': nothing of it is shown.
            ("postgresql://u:hun/ter2@h/db", "ter2"),
            ("postgresql://u:hun?ter2@h/db", "ter2"),
            ("postgresql://u:p@ss@h/db", "p@ss"),
        ] {
            let u = DatabaseUrl(url.into());
            for shown in [u.redacted(), format!("{u:?}"), format!("{u}")] {
                assert!(!shown.contains(secret), "{url} shown as {shown}");
            }
        }
        let u = DatabaseUrl("postgresql://127.0.0.1:9/db?user=u&password=hunter2".into());
        assert_eq!(
            u.redacted(),
            "postgresql://127.0.0.1:9/db?user=u&password=***"
        );
    }

    #[test]
    fn sqlite_paths() {
        let p = |s: &str| DatabaseUrl(s.into()).sqlite_path();
        assert_eq!(p("sqlite://data/shoal.db"), Some("data/shoal.db".into()));
        assert_eq!(
            p("sqlite:///var/lib/shoal.db?mode=rwc"),
            Some("/var/lib/shoal.db".into())
        );
        assert_eq!(p("sqlite::memory:"), None);
    }

    #[test]
    fn unknown_scheme_is_named() {
        let e = DatabaseUrl::parse("postgress://u:pw@h/db")
            .unwrap_err()
            .to_string();
        assert!(e.contains("'postgress'") && !e.contains("pw"), "{e}");
        assert!(
            DatabaseUrl::parse("data/shoal.db")
                .unwrap_err()
                .to_string()
                .contains("no scheme")
        );
    }
}
