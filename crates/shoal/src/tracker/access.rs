//! Who may announce and scrape: the mode, with the whitelist and keys held in memory. The
//! store is the source of truth; these caches are filled from it at start and changed only
//! after the store has accepted a change (see `api.rs`).

use std::collections::HashMap;
use std::fmt;
use std::sync::RwLock;

use protocol::{InfoHash, Key};
use store::{AuthKey, WhitelistEntry};

use crate::config::Mode;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    NotListed(InfoHash),
    MissingKey,
    MalformedKey,
    UnknownKey,
    ExpiredKey,
    /// UDP scrapes carry no URL data, so they cannot carry a key.
    ScrapeNeedsKey,
}

impl Refusal {
    /// The metrics label.
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::NotListed(_) => "not_listed",
            Refusal::MissingKey => "missing_key",
            Refusal::MalformedKey => "malformed_key",
            Refusal::UnknownKey => "unknown_key",
            Refusal::ExpiredKey => "expired_key",
            Refusal::ScrapeNeedsKey => "scrape_needs_key",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // The gist comes first: UDP errors are cut to the request's length.
            Refusal::NotListed(h) => write!(f, "torrent not whitelisted: {h}"),
            Refusal::MissingKey => {
                f.write_str("private tracker: announce with your key (/announce/<key>)")
            }
            Refusal::MalformedKey => f.write_str("malformed key: a key is 32 letters and digits"),
            Refusal::UnknownKey => f.write_str("unknown key"),
            Refusal::ExpiredKey => f.write_str("key expired"),
            Refusal::ScrapeNeedsKey => {
                f.write_str("private tracker: scrape over HTTP with your key (/scrape/<key>)")
            }
        }
    }
}

pub struct Access {
    mode: Mode,
    whitelist: RwLock<HashMap<InfoHash, WhitelistEntry>>,
    keys: RwLock<HashMap<Key, AuthKey>>,
}

impl Access {
    pub fn new(mode: Mode) -> Self {
        Access {
            mode,
            whitelist: RwLock::default(),
            keys: RwLock::default(),
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    fn listed(&self) -> bool {
        matches!(self.mode, Mode::Listed | Mode::PrivateListed)
    }

    fn private(&self) -> bool {
        matches!(self.mode, Mode::Private | Mode::PrivateListed)
    }

    /// `key` is the raw last path segment (HTTP) or BEP 41 URL segment (UDP), if any.
    pub fn check_announce(
        &self,
        h: &InfoHash,
        key: Option<&[u8]>,
        now: i64,
    ) -> Result<(), Refusal> {
        if self.private() {
            self.check_key(key, now)?;
        }
        self.check_listed(std::slice::from_ref(h))
    }

    /// `key`: `None` when the protocol cannot carry one (UDP).
    pub fn check_scrape(
        &self,
        hashes: &[InfoHash],
        key: Option<Option<&[u8]>>,
        now: i64,
    ) -> Result<(), Refusal> {
        if self.private() {
            match key {
                None => return Err(Refusal::ScrapeNeedsKey),
                Some(k) => self.check_key(k, now)?,
            }
        }
        self.check_listed(hashes)
    }

    fn check_listed(&self, hashes: &[InfoHash]) -> Result<(), Refusal> {
        if !self.listed() {
            return Ok(());
        }
        let list = self.whitelist.read().unwrap_or_else(|e| e.into_inner());
        match hashes.iter().find(|h| !list.contains_key(h)) {
            Some(h) => Err(Refusal::NotListed(*h)),
            None => Ok(()),
        }
    }

    fn check_key(&self, key: Option<&[u8]>, now: i64) -> Result<(), Refusal> {
        let raw = key.filter(|k| !k.is_empty()).ok_or(Refusal::MissingKey)?;
        let key = Key::parse(raw).map_err(|_| Refusal::MalformedKey)?;
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        match keys.get(&key) {
            None => Err(Refusal::UnknownKey),
            Some(k) if !k.is_valid_at(now) => Err(Refusal::ExpiredKey),
            Some(_) => Ok(()),
        }
    }

    pub fn load(&self, whitelist: Vec<WhitelistEntry>, keys: Vec<AuthKey>) {
        *self.whitelist.write().unwrap_or_else(|e| e.into_inner()) =
            whitelist.into_iter().map(|e| (e.info_hash, e)).collect();
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) =
            keys.into_iter().map(|k| (k.key, k)).collect();
    }

    pub fn listed_entry(&self, h: &InfoHash) -> Option<WhitelistEntry> {
        self.whitelist
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(h)
            .copied()
    }

    pub fn whitelist(&self) -> Vec<WhitelistEntry> {
        let mut v: Vec<_> = self
            .whitelist
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .copied()
            .collect();
        v.sort_by_key(|e| e.info_hash);
        v
    }

    pub fn set_listed(&self, e: WhitelistEntry) {
        self.whitelist
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(e.info_hash, e);
    }

    pub fn unlist(&self, h: &InfoHash) {
        self.whitelist
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(h);
    }

    pub fn keys(&self) -> Vec<AuthKey> {
        let mut v: Vec<_> = self
            .keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .copied()
            .collect();
        v.sort_by_key(|k| k.key);
        v
    }

    pub fn set_key(&self, k: AuthKey) {
        self.keys
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(k.key, k);
    }

    pub fn remove_key(&self, k: &Key) {
        self.keys
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(k);
    }

    pub fn counts(&self) -> (usize, usize) {
        (
            self.whitelist
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .len(),
            self.keys.read().unwrap_or_else(|e| e.into_inner()).len(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: InfoHash = InfoHash([7; 20]);
    const KEY: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz012345";

    fn access(mode: Mode) -> Access {
        let a = Access::new(mode);
        let key = |s: &[u8]| Key::parse(s).unwrap();
        a.load(
            vec![WhitelistEntry {
                info_hash: H,
                added_at: 0,
            }],
            vec![
                AuthKey {
                    key: key(KEY),
                    valid_until: None,
                    created_at: 0,
                },
                AuthKey {
                    key: key(b"EXPIRED0EXPIRED0EXPIRED0EXPIRED0"),
                    valid_until: Some(100),
                    created_at: 0,
                },
            ],
        );
        a
    }

    #[test]
    fn each_mode_checks_what_it_promises() {
        let other = InfoHash([8; 20]);
        let public = access(Mode::Public);
        assert_eq!(public.check_announce(&other, None, 0), Ok(()));
        assert_eq!(public.check_scrape(&[other], None, 0), Ok(()));

        let listed = access(Mode::Listed);
        assert_eq!(listed.check_announce(&H, None, 0), Ok(()));
        assert_eq!(
            listed.check_announce(&other, None, 0),
            Err(Refusal::NotListed(other))
        );
        assert_eq!(
            listed.check_scrape(&[H, other], None, 0),
            Err(Refusal::NotListed(other))
        );

        let private = access(Mode::Private);
        assert_eq!(private.check_announce(&other, Some(KEY), 0), Ok(()));
        assert_eq!(
            private.check_announce(&H, None, 0),
            Err(Refusal::MissingKey)
        );
        assert_eq!(
            private.check_announce(&H, Some(b""), 0),
            Err(Refusal::MissingKey)
        );
        assert_eq!(
            private.check_announce(&H, Some(b"short"), 0),
            Err(Refusal::MalformedKey)
        );
        assert_eq!(
            private.check_announce(&H, Some(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"), 0),
            Err(Refusal::UnknownKey)
        );
        assert_eq!(
            private.check_announce(&H, Some(b"EXPIRED0EXPIRED0EXPIRED0EXPIRED0"), 99),
            Ok(())
        );
        assert_eq!(
            private.check_announce(&H, Some(b"EXPIRED0EXPIRED0EXPIRED0EXPIRED0"), 100),
            Err(Refusal::ExpiredKey)
        );
        assert_eq!(
            private.check_scrape(&[H], None, 0),
            Err(Refusal::ScrapeNeedsKey)
        );
        assert_eq!(private.check_scrape(&[H], Some(Some(KEY)), 0), Ok(()));

        let both = access(Mode::PrivateListed);
        assert_eq!(both.check_announce(&H, Some(KEY), 0), Ok(()));
        assert_eq!(
            both.check_announce(&other, Some(KEY), 0),
            Err(Refusal::NotListed(other))
        );
        assert_eq!(both.check_announce(&H, None, 0), Err(Refusal::MissingKey));
    }
}
