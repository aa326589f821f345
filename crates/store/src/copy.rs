//! The copy engine behind `shoal migrate`: every row of every table from one store to another,
//! streamed in batches, written in one destination transaction, verified, and only then
//! committed.
//!
//! All or nothing: a bad row, a lost connection on either side, a full disk, an interrupt or a
//! failed verification drops the transaction, so the destination is left exactly as it was and
//! the same command can simply be run again. Verification compares, per table, the row count
//! and an order-independent checksum (the wrapping sum of one hash per row) of the source,
//! read twice, with the destination as the open transaction sees it.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

use protocol::InfoHash;
use tokio::sync::{mpsc, oneshot};

use crate::{AnyStore, AuthKey, ClientRule, StoreError, WhitelistEntry};

/// How many tables a copy moves.
pub const TABLES: usize = 5;

/// Whole-table streams for `shoal migrate`: what a store does for the copy engine above.
pub trait Transfer {
    /// Reads every table in `format` (in `Table::ALL` order) in one read transaction, so all
    /// of them as of one moment, sending batches of `batch_rows` to `out` (or only summing
    /// when `out` is None). A row that cannot be read stops the read, unless `skip_invalid`,
    /// which lists it instead. `now` stands in for times the format lacks.
    fn export(
        &self,
        format: Format,
        skip_invalid: bool,
        now: i64,
        out: Option<&tokio::sync::mpsc::Sender<Batch>>,
        batch_rows: usize,
    ) -> impl Future<Output = Result<[Exported; TABLES], StoreError>> + Send;
    /// Writes every batch from `rx` in one transaction, which is committed only when
    /// `source_done` fires (every row was read and the source did not change) and the
    /// destination, read inside that transaction, holds exactly what it must. Anything else
    /// rolls back: the destination is left as it was. `before` holds the destination's sums
    /// before the copy; the result says what each table must hold and what it held.
    fn import(
        &self,
        rx: tokio::sync::mpsc::Receiver<Batch>,
        source_done: tokio::sync::oneshot::Receiver<()>,
        merge: Option<Merge>,
        before: [TableSum; TABLES],
        progress: &Progress,
    ) -> impl Future<Output = Result<Imported, StoreError>> + Send;
}

pub(crate) const WRITER_STOPPED: &str = "the writer stopped";
pub(crate) const READER_STOPPED: &str = "the source was not read to the end; nothing was written";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Torrents,
    Counters,
    Whitelist,
    Keys,
    ClientRules,
}

impl Table {
    pub const ALL: [Table; TABLES] = [
        Table::Torrents,
        Table::Counters,
        Table::Whitelist,
        Table::Keys,
        Table::ClientRules,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Table::Torrents => "torrents",
            Table::Counters => "counters",
            Table::Whitelist => "whitelist",
            Table::Keys => "keys",
            Table::ClientRules => "client_rules",
        }
    }
}

/// How the source lays out its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Shoal,
    /// Torrust Tracker: hex info-hashes, surrogate ids, `torrent_aggregate_metrics`.
    Torrust,
}

/// What to do with rows the destination already holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merge {
    /// Download counts are added; whitelist entries and keys already there are kept.
    Add,
    /// The larger download count wins; whitelist entries and keys already there are kept.
    Max,
}

/// Rows in flight, in Shoal's own shapes.
#[derive(Debug)]
pub enum Batch {
    Torrents(Vec<(InfoHash, i64)>),
    Counters(Vec<(String, i64)>),
    Whitelist(Vec<WhitelistEntry>),
    Keys(Vec<AuthKey>),
    ClientRules(Vec<ClientRule>),
}

impl Batch {
    pub fn len(&self) -> usize {
        match self {
            Batch::Torrents(v) => v.len(),
            Batch::Counters(v) => v.len(),
            Batch::Whitelist(v) => v.len(),
            Batch::Keys(v) => v.len(),
            Batch::ClientRules(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn table(&self) -> Table {
        match self {
            Batch::Torrents(_) => Table::Torrents,
            Batch::Counters(_) => Table::Counters,
            Batch::Whitelist(_) => Table::Whitelist,
            Batch::Keys(_) => Table::Keys,
            Batch::ClientRules(_) => Table::ClientRules,
        }
    }
}

/// Row count and order-independent checksum of a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TableSum {
    pub rows: u64,
    pub sum: u64,
}

impl TableSum {
    pub(crate) fn add(&mut self, row_hash: u64) {
        self.rows += 1;
        self.sum = self.sum.wrapping_add(row_hash);
    }

    pub(crate) fn remove(&mut self, row_hash: u64) {
        self.rows -= 1;
        self.sum = self.sum.wrapping_sub(row_hash);
    }
}

fn row_hash(parts: impl Hash) -> u64 {
    // Fixed keys: both sides are hashed in this process, so only determinism matters.
    let mut h = DefaultHasher::new();
    parts.hash(&mut h);
    h.finish()
}

pub(crate) fn torrent_hash(h: &InfoHash, completed: i64) -> u64 {
    row_hash((b't', h.0, completed))
}

pub(crate) fn counter_hash(name: &str, value: i64) -> u64 {
    row_hash((b'c', name, value))
}

pub(crate) fn whitelist_hash(e: &WhitelistEntry) -> u64 {
    row_hash((b'w', e.info_hash.0, e.added_at))
}

pub(crate) fn key_hash(k: &AuthKey) -> u64 {
    row_hash((b'k', k.key.as_str(), k.valid_until, k.created_at))
}

pub(crate) fn rule_hash(r: &ClientRule) -> u64 {
    row_hash((b'r', r.prefix.as_str(), r.kind, r.added_at))
}

/// What one read of a table found.
#[derive(Debug, Clone, Default)]
pub struct Exported {
    pub sum: TableSum,
    /// Rows that could not be read, each named by table and row, when skipping was allowed.
    pub skipped: Vec<String>,
}

/// Rows copied so far, per table, for a progress display.
#[derive(Default)]
pub struct Progress {
    rows: [AtomicU64; TABLES],
    current: AtomicUsize,
}

impl Progress {
    pub(crate) fn add(&self, t: Table, n: u64) {
        self.current.store(t as usize, Relaxed);
        self.rows[t as usize].fetch_add(n, Relaxed);
    }

    pub fn total(&self) -> u64 {
        self.rows.iter().map(|r| r.load(Relaxed)).sum()
    }

    pub fn current(&self) -> Table {
        Table::ALL[self.current.load(Relaxed).min(TABLES - 1)]
    }
}

#[derive(Debug, Clone, Copy)]
pub struct CopyOptions {
    pub merge: Option<Merge>,
    pub skip_invalid: bool,
    /// Rows per batch; a few batches are in flight at once, never a whole table.
    pub batch_rows: usize,
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            merge: None,
            skip_invalid: false,
            batch_rows: 5000,
        }
    }
}

/// One table's outcome, for the summary.
#[derive(Debug, Clone)]
pub struct TableReport {
    pub table: Table,
    pub source: TableSum,
    pub destination: TableSum,
    /// What the destination must hold: the source itself, or the merge of both.
    pub expected: TableSum,
    pub copied: u64,
    pub skipped: Vec<String>,
}

impl TableReport {
    pub fn ok(&self) -> bool {
        self.destination == self.expected
    }
}

/// One table as the writer left it: rows written, the sum the destination must have, and
/// the sum it had inside the transaction.
#[derive(Debug, Clone, Copy, Default)]
pub struct TableImport {
    pub copied: u64,
    pub expected: TableSum,
    pub found: TableSum,
}

/// What the writer did: per table, and whether it committed (only when every table verified).
#[derive(Debug, Clone, Copy)]
pub struct Imported {
    pub tables: [TableImport; TABLES],
    pub committed: bool,
}

/// Copies every table from `src` (read only) to `dst` (already migrated), verifies, and commits
/// only if every table verified; a report that is not `ok()` means nothing was written.
pub async fn copy(
    src: &AnyStore,
    format: Format,
    dst: &AnyStore,
    opts: CopyOptions,
    progress: Arc<Progress>,
) -> Result<Vec<TableReport>, StoreError> {
    let now = crate::unix_now();
    let before = dst
        .export(Format::Shoal, true, now, None, opts.batch_rows)
        .await?
        .map(|e| e.sum);
    for t in Table::ALL {
        if opts.merge.is_none() && before[t as usize].rows > 0 {
            return Err(StoreError::Copy(format!(
                "the destination already has {} rows in {}; copy into an empty database, or say how to combine them with --merge add|max",
                before[t as usize].rows,
                t.name()
            )));
        }
    }

    let (tx, rx) = mpsc::channel::<Batch>(4);
    let (done, source_done) = oneshot::channel();
    let reader = async {
        let out = src
            .export(format, opts.skip_invalid, now, Some(&tx), opts.batch_rows)
            .await?;
        drop(tx);
        // Before the commit: the source must read the same now as in the snapshot copied, or
        // something still writes to it and the copy would miss that.
        let again = src.export(format, true, now, None, opts.batch_rows).await?;
        if let Some(t) = Table::ALL
            .into_iter()
            .find(|&t| again[t as usize].sum != out[t as usize].sum)
        {
            return Err(StoreError::Copy(format!(
                "the source's {} table changed while it was copied; nothing was written; stop what writes to it and run again",
                t.name()
            )));
        }
        let _ = done.send(());
        Ok::<_, StoreError>(out)
    };
    let writer = dst.import(rx, source_done, opts.merge, before, &progress);
    let (read, written) = tokio::join!(reader, writer);
    let (read, written) = match (read, written) {
        (Ok(r), Ok(w)) => (r, w),
        // The reader only noticed that the writer had stopped; the writer says why.
        (Err(StoreError::Copy(m)), Err(w)) if m == WRITER_STOPPED => return Err(w),
        (Err(e), _) | (_, Err(e)) => return Err(e),
    };
    Ok(Table::ALL
        .iter()
        .map(|&t| {
            let w = &written.tables[t as usize];
            TableReport {
                table: t,
                source: read[t as usize].sum,
                destination: w.found,
                expected: w.expected,
                copied: w.copied,
                skipped: read[t as usize].skipped.clone(),
            }
        })
        .collect())
}

/// One row in Shoal's shape.
#[derive(Debug, Clone)]
pub(crate) enum Item {
    Torrent(InfoHash, i64),
    Counter(String, i64),
    Listed(WhitelistEntry),
    Key(AuthKey),
    Rule(ClientRule),
}

impl Item {
    pub(crate) fn hash(&self) -> u64 {
        match self {
            Item::Torrent(h, n) => torrent_hash(h, *n),
            Item::Counter(name, v) => counter_hash(name, *v),
            Item::Listed(e) => whitelist_hash(e),
            Item::Key(k) => key_hash(k),
            Item::Rule(r) => rule_hash(r),
        }
    }

    /// The primary key's bytes, to match rows of one table.
    pub(crate) fn pk(&self) -> Vec<u8> {
        match self {
            Item::Torrent(h, _) => h.0.to_vec(),
            Item::Counter(name, _) => name.as_bytes().to_vec(),
            Item::Listed(e) => e.info_hash.0.to_vec(),
            Item::Key(k) => k.key.as_str().as_bytes().to_vec(),
            Item::Rule(r) => r.prefix.as_bytes().to_vec(),
        }
    }

    /// What the destination holds after merging `incoming` into `self`.
    pub(crate) fn merged(&self, incoming: &Item, m: Merge) -> Result<Item, StoreError> {
        let combine = |a: i64, b: i64| match m {
            Merge::Add => a.checked_add(b).ok_or_else(|| {
                StoreError::Copy(format!("adding {a} and {b} overflows a 64-bit count"))
            }),
            Merge::Max => Ok(a.max(b)),
        };
        Ok(match (self, incoming) {
            (Item::Torrent(h, a), Item::Torrent(_, b)) => Item::Torrent(*h, combine(*a, *b)?),
            (Item::Counter(name, a), Item::Counter(_, b)) => {
                Item::Counter(name.clone(), combine(*a, *b)?)
            }
            (kept, _) => kept.clone(),
        })
    }
}

impl Batch {
    pub(crate) fn empty(t: Table, capacity: usize) -> Batch {
        match t {
            Table::Torrents => Batch::Torrents(Vec::with_capacity(capacity)),
            Table::Counters => Batch::Counters(Vec::with_capacity(capacity)),
            Table::Whitelist => Batch::Whitelist(Vec::with_capacity(capacity)),
            Table::Keys => Batch::Keys(Vec::with_capacity(capacity)),
            Table::ClientRules => Batch::ClientRules(Vec::with_capacity(capacity)),
        }
    }

    pub(crate) fn push(&mut self, item: Item) {
        match (self, item) {
            (Batch::Torrents(v), Item::Torrent(h, n)) => v.push((h, n)),
            (Batch::Counters(v), Item::Counter(name, n)) => v.push((name, n)),
            (Batch::Whitelist(v), Item::Listed(e)) => v.push(e),
            (Batch::Keys(v), Item::Key(k)) => v.push(k),
            (Batch::ClientRules(v), Item::Rule(r)) => v.push(r),
            (b, i) => unreachable!("{i:?} pushed into a {} batch", b.table().name()),
        }
    }

    pub(crate) fn items(&self) -> Vec<Item> {
        match self {
            Batch::Torrents(v) => v.iter().map(|(h, n)| Item::Torrent(*h, *n)).collect(),
            Batch::Counters(v) => v
                .iter()
                .map(|(name, n)| Item::Counter(name.clone(), *n))
                .collect(),
            Batch::Whitelist(v) => v.iter().map(|e| Item::Listed(*e)).collect(),
            Batch::Keys(v) => v.iter().map(|k| Item::Key(*k)).collect(),
            Batch::ClientRules(v) => v.iter().map(|r| Item::Rule(r.clone())).collect(),
        }
    }
}
