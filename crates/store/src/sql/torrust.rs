//! Torrust Tracker's layout, read by `shoal migrate --from torrust+…`: hex info-hashes,
//! surrogate ids, `torrent_aggregate_metrics`. Torrust keeps no `added_at` or `created_at`,
//! so those become the time of the copy (`now`).

use protocol::{InfoHash, Key};
use sqlx::{ColumnIndex, Decode, Row, Type};

use super::rows::non_negative;
use crate::copy::{Item, Table};
use crate::{AuthKey, DOWNLOADS_TOTAL, WhitelistEntry};

/// The table each `Table` is read from in Torrust's layout.
pub(crate) fn table(t: Table) -> &'static str {
    match t {
        Table::Counters => "torrent_aggregate_metrics",
        // Torrust has none: a name no Torrust database holds, so the table is skipped.
        Table::ClientRules => "shoal_no_such_table",
        other => other.name(),
    }
}

/// Reads one row of table `t` in Torrust's layout: `CAST(id)`, the text column, a number.
/// The error names the table and the row id.
pub(crate) fn decode_row<R: Row>(t: Table, row: &R, now: i64) -> Result<Item, String>
where
    usize: ColumnIndex<R>,
    for<'q> i64: Decode<'q, R::Database> + Type<R::Database>,
    for<'q> Option<i64>: Decode<'q, R::Database> + Type<R::Database>,
    for<'q> Vec<u8>: Decode<'q, R::Database> + Type<R::Database>,
    for<'q> String: Decode<'q, R::Database> + Type<R::Database>,
{
    let name = t.name();
    let get_err = |e: sqlx::Error| format!("{name} row: {e}");
    let id: i64 = row.try_get(0).map_err(get_err)?;
    let text: String = row
        .try_get(1)
        .map_err(|e| format!("{name} row id={id}: {e}"))?;
    let hash = || {
        InfoHash::from_hex(&text)
            .map_err(|e| format!("{name} row id={id}: info_hash {text:?}: {e}"))
    };
    if t == Table::ClientRules {
        return Err(format!("{name}: Torrust Tracker has no such table"));
    }
    let number = |i: usize| {
        row.try_get::<Option<i64>, _>(i)
            .map_err(|e| format!("{name} row id={id}: {e}"))
    };
    Ok(match t {
        Table::Torrents => {
            let n = number(2)?.ok_or_else(|| format!("{name} row id={id}: completed is NULL"))?;
            Item::Torrent(
                hash()?,
                non_negative(t, "completed", n).map_err(|e| format!("{e} (id={id})"))?,
            )
        }
        Table::Counters => Item::Counter(DOWNLOADS_TOTAL.to_string(), number(2)?.unwrap_or(0)),
        Table::Whitelist => Item::Listed(WhitelistEntry {
            info_hash: hash()?,
            added_at: now,
        }),
        Table::Keys => {
            let key = Key::parse(text.as_bytes())
                .map_err(|e| format!("{name} row id={id}: key {text:?}: {e}"))?;
            Item::Key(AuthKey {
                key,
                valid_until: number(2)?,
                created_at: now,
            })
        }
        Table::ClientRules => unreachable!("returned above"),
    })
}
