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

    /// The URL with any password replaced by `***`.
    pub fn redacted(&self) -> String {
        let Some((scheme, rest)) = self.0.split_once("://") else {
            return self.0.clone();
        };
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        match authority.rsplit_once('@') {
            Some((userinfo, host)) => {
                let user = userinfo.split(':').next().unwrap_or("");
                let masked = if userinfo.contains(':') {
                    format!("{user}:***")
                } else {
                    user.to_string()
                };
                format!("{scheme}://{masked}@{host}{tail}")
            }
            None => self.0.clone(),
        }
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
