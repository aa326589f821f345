//! Who may announce and scrape: the mode, with the whitelist and keys held in memory. The
//! store is the source of truth; these caches are filled from it at start and changed only
//! after the store has accepted a change (`server/admin/mod.rs`).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;

use protocol::{InfoHash, Key};
use store::{AuthKey, Store, StoreError, WhitelistEntry};

use crate::config::Mode;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    NotListed(InfoHash),
    MissingKey,
    MalformedKey,
    UnknownKey,
    ExpiredKey,
    /// UDP scrapes carry no URL data, so they cannot carry a key.
    ScrapeNeedsKey,
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

/// The whitelist and keys as of one moment. Replaced whole, never changed in place.
#[derive(Default, Clone)]
struct AccessSnapshot {
    whitelist: HashMap<InfoHash, WhitelistEntry>,
    keys: HashMap<Key, AuthKey>,
}

/// Who may announce, as a service: announces read an immutable snapshot without locking;
/// changes go to the store first and then publish a new snapshot; `reload` rebuilds it from
/// the store (at start, and whenever another writer may have changed the store).
pub struct Access {
    mode: Mode,
    lists: ArcSwap<AccessSnapshot>,
    /// Held from a change's store write to its snapshot, so two changes cannot interleave
    /// and leave memory holding what the store does not (a revoked key valid, say).
    writes: tokio::sync::Mutex<()>,
    /// Set by every admin change, taken by the cluster publisher to tell the other nodes.
    changed: std::sync::atomic::AtomicBool,
}

impl Access {
    pub fn new(mode: Mode) -> Self {
        Access {
            mode,
            lists: ArcSwap::default(),
            writes: tokio::sync::Mutex::default(),
            changed: Default::default(),
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
        let lists = self.lists.load();
        match hashes.iter().find(|h| !lists.whitelist.contains_key(h)) {
            Some(h) => Err(Refusal::NotListed(*h)),
            None => Ok(()),
        }
    }

    fn check_key(&self, key: Option<&[u8]>, now: i64) -> Result<(), Refusal> {
        let raw = key.filter(|k| !k.is_empty()).ok_or(Refusal::MissingKey)?;
        let key = Key::parse(raw).map_err(|_| Refusal::MalformedKey)?;
        match self.lists.load().keys.get(&key) {
            None => Err(Refusal::UnknownKey),
            Some(k) if !k.is_valid_at(now) => Err(Refusal::ExpiredKey),
            Some(_) => Ok(()),
        }
    }

    /// Installs a whole new snapshot.
    pub fn load(&self, whitelist: Vec<WhitelistEntry>, keys: Vec<AuthKey>) {
        self.lists.store(Arc::new(AccessSnapshot {
            whitelist: whitelist.into_iter().map(|e| (e.info_hash, e)).collect(),
            keys: keys.into_iter().map(|k| (k.key, k)).collect(),
        }));
    }

    /// Rebuilds the snapshot from what the store holds.
    pub async fn reload<S: Store>(&self, store: &S) -> Result<(usize, usize), StoreError> {
        let _one_change = self.writes.lock().await;
        let whitelist = store.load_whitelist().await?;
        let keys = store.load_keys().await?;
        let counts = (whitelist.len(), keys.len());
        self.load(whitelist, keys);
        Ok(counts)
    }

    /// Publishes a copy of the snapshot with `change` applied. Copying is O(n) per admin
    /// change, which keeps every announce free of locks.
    fn publish(&self, change: impl FnOnce(&mut AccessSnapshot)) {
        let mut next = AccessSnapshot::clone(&self.lists.load());
        change(&mut next);
        self.lists.store(Arc::new(next));
        self.changed
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Notes a change made here (a client rule, through `Tracker`), for the cluster's notice.
    pub fn mark_changed(&self) {
        self.changed
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Whether an admin change was made here since the last call.
    pub fn take_changed(&self) -> bool {
        self.changed
            .swap(false, std::sync::atomic::Ordering::AcqRel)
    }

    /// AccessSnapshot an info-hash in the store, then here. Returns what the store holds (an entry
    /// listed before keeps its first `added_at`) and whether it is new.
    pub async fn list<S: Store>(
        &self,
        store: &S,
        entry: WhitelistEntry,
    ) -> Result<(WhitelistEntry, bool), StoreError> {
        let _one_change = self.writes.lock().await;
        store.add_info_hash_to_whitelist(&entry).await?;
        let stored = store
            .get_info_hash_from_whitelist(&entry.info_hash)
            .await?
            .unwrap_or(entry);
        let created = !self.lists.load().whitelist.contains_key(&entry.info_hash);
        self.publish(|l| {
            l.whitelist.insert(stored.info_hash, stored);
        });
        Ok((stored, created))
    }

    /// Unlists an info-hash in the store, then here; whether the store had it.
    pub async fn unlist<S: Store>(&self, store: &S, h: &InfoHash) -> Result<bool, StoreError> {
        let _one_change = self.writes.lock().await;
        let removed = store.remove_info_hash_from_whitelist(h).await?;
        self.publish(|l| {
            l.whitelist.remove(h);
        });
        Ok(removed)
    }

    /// Adds (or replaces) a key in the store, then here.
    pub async fn add_key<S: Store>(&self, store: &S, k: AuthKey) -> Result<(), StoreError> {
        let _one_change = self.writes.lock().await;
        store.add_key_to_keys(&k).await?;
        self.publish(|l| {
            l.keys.insert(k.key, k);
        });
        Ok(())
    }

    /// Removes a key from the store, then here; whether the store had it.
    pub async fn remove_key<S: Store>(&self, store: &S, k: &Key) -> Result<bool, StoreError> {
        let _one_change = self.writes.lock().await;
        let removed = store.remove_key_from_keys(k).await?;
        self.publish(|l| {
            l.keys.remove(k);
        });
        Ok(removed)
    }

    pub fn whitelist(&self) -> Vec<WhitelistEntry> {
        let mut v: Vec<_> = self.lists.load().whitelist.values().copied().collect();
        v.sort_by_key(|e| e.info_hash);
        v
    }

    pub fn keys(&self) -> Vec<AuthKey> {
        let mut v: Vec<_> = self.lists.load().keys.values().copied().collect();
        v.sort_by_key(|k| k.key);
        v
    }

    pub fn counts(&self) -> (usize, usize) {
        let lists = self.lists.load();
        (lists.whitelist.len(), lists.keys.len())
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

    /// Changes go to the store first: a write the store refuses leaves the snapshot as it
    /// was, and `reload` shows exactly what the store holds.
    #[tokio::test]
    async fn changes_reach_announces_only_through_the_store() {
        use store::{AnyStore, AuthKeyStore, Connection, DatabaseUrl, SchemaMigrator};
        let dir = tempfile::tempdir().unwrap();
        let url = DatabaseUrl::parse(&format!("sqlite://{}/a.db", dir.path().display())).unwrap();
        let store = AnyStore::open(&url, 2).await.unwrap();
        store.migrate().await.unwrap();
        let a = Access::new(Mode::Private);
        let k = |s: &[u8]| AuthKey {
            key: Key::parse(s).unwrap(),
            valid_until: None,
            created_at: 0,
        };
        a.add_key(&store, k(KEY)).await.unwrap();
        assert_eq!(a.check_announce(&H, Some(KEY), 0), Ok(()));
        let entry = WhitelistEntry {
            info_hash: H,
            added_at: 5,
        };
        assert_eq!(a.list(&store, entry).await.unwrap(), (entry, true));
        let later = WhitelistEntry {
            info_hash: H,
            added_at: 9,
        };
        assert_eq!(
            a.list(&store, later).await.unwrap(),
            (entry, false),
            "first added_at kept"
        );

        // Another writer (another node, a restored backup) changed the store: reload sees it.
        store
            .remove_key_from_keys(&Key::parse(KEY).unwrap())
            .await
            .unwrap();
        assert_eq!(a.check_announce(&H, Some(KEY), 0), Ok(()), "until reloaded");
        assert_eq!(a.reload(&store).await.unwrap(), (1, 0));
        assert_eq!(a.check_announce(&H, Some(KEY), 0), Err(Refusal::UnknownKey));

        store.close().await;
        let other = b"OTHEROTHEROTHEROTHEROTHEROTHER01";
        assert!(a.add_key(&store, k(other)).await.is_err());
        assert!(a.unlist(&store, &H).await.is_err());
        assert_eq!(
            a.check_announce(&H, Some(other), 0),
            Err(Refusal::UnknownKey)
        );
        assert_eq!(
            a.counts(),
            (1, 0),
            "a refused write changes nothing in memory"
        );
    }
}
