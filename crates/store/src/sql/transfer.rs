//! `Transfer` for every backend: whole tables out of a snapshot, in through one transaction
//! that commits only once everything verified (see `copy.rs`).

use std::collections::HashMap;

use futures_util::TryStreamExt;
use sqlx::migrate::Migrate;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, QueryBuilder, Type};

use super::rows::decode_row;
use super::{Dialect, SqlStore, torrust};
use crate::StoreError;
use crate::copy::Transfer;
use crate::copy::{
    Batch, Exported, Format, Imported, Item, Merge, Progress, TABLES, Table, TableImport, TableSum,
};

fn merge_index(merge: Option<Merge>) -> usize {
    match merge {
        None => 0,
        Some(Merge::Add) => 1,
        Some(Merge::Max) => 2,
    }
}

impl<DB: Dialect> Transfer for SqlStore<DB>
where
    for<'c> &'c mut <DB as Database>::Connection: Executor<'c, Database = DB>,
    <DB as Database>::Arguments: IntoArguments<DB>,
    <DB as Database>::Connection: Migrate,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> &'q [u8]: Encode<'q, DB> + Type<DB>,
    for<'q> Vec<u8>: Decode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> String: Decode<'q, DB> + Type<DB>,
    usize: ColumnIndex<<DB as Database>::Row>,
{
    async fn export(
        &self,
        format: Format,
        skip_invalid: bool,
        now: i64,
        out: Option<&tokio::sync::mpsc::Sender<Batch>>,
        batch_rows: usize,
    ) -> Result<[Exported; TABLES], StoreError> {
        let mut all: [Exported; TABLES] = Default::default();
        // One transaction: every table as of one moment, however long the read takes.
        let mut tx = self.pool.begin().await?;
        if let Some(sql) = DB::SNAPSHOT {
            sqlx::query(sql).execute(&mut *tx).await?;
        }
        for t in Table::ALL {
            let exported = &mut all[t as usize];
            if format == Format::Torrust {
                // Older Torrust databases lack torrent_aggregate_metrics; nothing to read then.
                let (n,): (i64,) = sqlx::query_as(self.q.table_exists.clone())
                    .bind(torrust::table(t))
                    .fetch_one(&mut *tx)
                    .await?;
                if n == 0 {
                    continue;
                }
            }
            let sql = self.q.export[t as usize][(format == Format::Torrust) as usize].clone();
            let mut rows = sqlx::query(sql).fetch(&mut *tx);
            let mut batch = Batch::empty(t, batch_rows);
            while let Some(row) = rows.try_next().await? {
                let item = match format {
                    Format::Torrust => torrust::decode_row(t, &row, now),
                    Format::Shoal => decode_row(t, &row),
                };
                match item {
                    Ok(item) => {
                        exported.sum.add(item.hash());
                        if let Some(out) = out {
                            batch.push(item);
                            if batch.len() >= batch_rows {
                                let full =
                                    std::mem::replace(&mut batch, Batch::empty(t, batch_rows));
                                out.send(full).await.map_err(|_| {
                                    StoreError::Copy(crate::copy::WRITER_STOPPED.into())
                                })?;
                            }
                        }
                    }
                    Err(why) if skip_invalid => exported.skipped.push(why),
                    Err(why) => {
                        return Err(StoreError::Copy(format!(
                            "{why}; nothing was written (--skip-invalid leaves such rows behind and lists them)"
                        )));
                    }
                }
            }
            drop(rows);
            if let Some(out) = out.filter(|_| !batch.is_empty()) {
                out.send(batch)
                    .await
                    .map_err(|_| StoreError::Copy(crate::copy::WRITER_STOPPED.into()))?;
            }
        }
        Ok(all)
    }

    async fn import(
        &self,
        mut rx: tokio::sync::mpsc::Receiver<Batch>,
        source_done: tokio::sync::oneshot::Receiver<()>,
        merge: Option<Merge>,
        before: [TableSum; TABLES],
        progress: &Progress,
    ) -> Result<Imported, StoreError> {
        let mut result = before.map(|expected| TableImport {
            copied: 0,
            expected,
            found: TableSum::default(),
        });
        // Dropped without a commit on every early return: the destination rolls back.
        let mut tx = self.pool.begin().await?;
        while let Some(batch) = rx.recv().await {
            let t = batch.table();
            let items = batch.items();
            let r = &mut result[t as usize];
            if let Some(m) = merge {
                // Learn the rows this batch meets, so the expected sums stay exact.
                let mut q = QueryBuilder::<DB>::new(&self.q.existing_head[t as usize]);
                q.push("(");
                let mut list = q.separated(", ");
                for item in &items {
                    match item {
                        Item::Torrent(h, _) => list.push_bind(&h.0[..]),
                        Item::Counter(name, _) => list.push_bind(name.as_str()),
                        Item::Listed(e) => list.push_bind(&e.info_hash.0[..]),
                        Item::Key(k) => list.push_bind(k.key.as_str()),
                        Item::Rule(r) => list.push_bind(r.prefix.as_str()),
                    };
                }
                q.push(")");
                let mut old = HashMap::new();
                for row in q.build().fetch_all(&mut *tx).await? {
                    let item = decode_row(t, &row).map_err(StoreError::Copy)?;
                    old.insert(item.pk(), item);
                }
                for item in &items {
                    match old.get(&item.pk()) {
                        Some(o) => {
                            r.expected.remove(o.hash());
                            r.expected.add(o.merged(item, m)?.hash());
                        }
                        None => r.expected.add(item.hash()),
                    }
                }
            } else {
                for item in &items {
                    r.expected.add(item.hash());
                }
            }
            let mut q = QueryBuilder::<DB>::new(&self.q.import_head[t as usize]);
            match &batch {
                Batch::Torrents(v) => q.push_values(v, |mut row, (h, n)| {
                    row.push_bind(&h.0[..]).push_bind(*n);
                }),
                Batch::Counters(v) => q.push_values(v, |mut row, (name, n)| {
                    row.push_bind(name.as_str()).push_bind(*n);
                }),
                Batch::Whitelist(v) => q.push_values(v, |mut row, e| {
                    row.push_bind(&e.info_hash.0[..]).push_bind(e.added_at);
                }),
                Batch::Keys(v) => q.push_values(v, |mut row, k| {
                    row.push_bind(k.key.as_str())
                        .push_bind(k.valid_until)
                        .push_bind(k.created_at);
                }),
                Batch::ClientRules(v) => q.push_values(v, |mut row, r| {
                    row.push_bind(r.prefix.as_str())
                        .push_bind(r.kind.as_str())
                        .push_bind(r.added_at);
                }),
            };
            q.push(&self.q.import_tail[t as usize][merge_index(merge)]);
            q.build().execute(&mut *tx).await?;
            r.copied += batch.len() as u64;
            progress.add(t, batch.len() as u64);
        }
        // The channel also closes when the reader fails; only its word says it read everything.
        if source_done.await.is_err() {
            return Err(StoreError::Copy(crate::copy::READER_STOPPED.into()));
        }
        for t in Table::ALL {
            let mut rows = sqlx::query(self.q.export[t as usize][0].clone()).fetch(&mut *tx);
            let found = &mut result[t as usize].found;
            while let Some(row) = rows.try_next().await? {
                found.add(decode_row(t, &row).map_err(StoreError::Copy)?.hash());
            }
        }
        let verified = result.iter().all(|r| r.found == r.expected);
        if verified {
            tx.commit().await?;
        }
        Ok(Imported {
            tables: result,
            committed: verified,
        })
    }
}
