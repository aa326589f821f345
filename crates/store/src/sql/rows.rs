//! Reading rows in Shoal's layout into its types, for the store traits and the copy engine
//! alike; Torrust's layout is read in `torrust.rs`.

use protocol::{InfoHash, Key};
use sqlx::{ColumnIndex, Decode, Row, Type};

use crate::copy::{Item, Table};
use crate::{AuthKey, ClientRule, RuleKind, StoreError, WhitelistEntry};

/// A whitelist or keys row in Shoal's layout, read by the same code the copy engine uses.
pub(crate) fn shoal_row<R: Row>(t: Table, row: &R) -> Result<Item, StoreError>
where
    usize: ColumnIndex<R>,
    for<'q> i64: Decode<'q, R::Database> + Type<R::Database>,
    for<'q> Option<i64>: Decode<'q, R::Database> + Type<R::Database>,
    for<'q> Vec<u8>: Decode<'q, R::Database> + Type<R::Database>,
    for<'q> String: Decode<'q, R::Database> + Type<R::Database>,
{
    decode_row(t, row).map_err(|detail| StoreError::BadRow {
        what: t.name(),
        detail,
    })
}

pub(crate) fn whitelist_row<R: Row>(row: &R) -> Result<WhitelistEntry, StoreError>
where
    usize: ColumnIndex<R>,
    for<'q> i64: Decode<'q, R::Database> + Type<R::Database>,
    for<'q> Option<i64>: Decode<'q, R::Database> + Type<R::Database>,
    for<'q> Vec<u8>: Decode<'q, R::Database> + Type<R::Database>,
    for<'q> String: Decode<'q, R::Database> + Type<R::Database>,
{
    match shoal_row(Table::Whitelist, row)? {
        Item::Listed(e) => Ok(e),
        other => unreachable!("a whitelist row decoded as {other:?}"),
    }
}

pub(crate) fn key_row<R: Row>(row: &R) -> Result<AuthKey, StoreError>
where
    usize: ColumnIndex<R>,
    for<'q> i64: Decode<'q, R::Database> + Type<R::Database>,
    for<'q> Option<i64>: Decode<'q, R::Database> + Type<R::Database>,
    for<'q> Vec<u8>: Decode<'q, R::Database> + Type<R::Database>,
    for<'q> String: Decode<'q, R::Database> + Type<R::Database>,
{
    match shoal_row(Table::Keys, row)? {
        Item::Key(k) => Ok(k),
        other => unreachable!("a keys row decoded as {other:?}"),
    }
}

pub(crate) fn rule_row<R: Row>(row: &R) -> Result<ClientRule, StoreError>
where
    usize: ColumnIndex<R>,
    for<'q> i64: Decode<'q, R::Database> + Type<R::Database>,
    for<'q> Option<i64>: Decode<'q, R::Database> + Type<R::Database>,
    for<'q> Vec<u8>: Decode<'q, R::Database> + Type<R::Database>,
    for<'q> String: Decode<'q, R::Database> + Type<R::Database>,
{
    match shoal_row(Table::ClientRules, row)? {
        Item::Rule(r) => Ok(r),
        other => unreachable!("a client_rules row decoded as {other:?}"),
    }
}

/// Reads one row of table `t` in Shoal's layout (`torrust.rs` reads Torrust's). The error
/// names the row.
pub(crate) fn decode_row<R: Row>(t: Table, row: &R) -> Result<Item, String>
where
    usize: ColumnIndex<R>,
    for<'q> i64: Decode<'q, R::Database> + Type<R::Database>,
    for<'q> Option<i64>: Decode<'q, R::Database> + Type<R::Database>,
    for<'q> Vec<u8>: Decode<'q, R::Database> + Type<R::Database>,
    for<'q> String: Decode<'q, R::Database> + Type<R::Database>,
{
    let name = t.name();
    let get_err = |e: sqlx::Error| format!("{name} row: {e}");
    let hash_bytes = |b: Vec<u8>| {
        InfoHash::from_slice(&b)
            .ok_or_else(|| format!("{name} row: info_hash has {} bytes, expected 20", b.len()))
    };
    Ok(match t {
        Table::Torrents => Item::Torrent(
            hash_bytes(row.try_get(0).map_err(get_err)?)?,
            non_negative(t, "completed", row.try_get(1).map_err(get_err)?)?,
        ),
        Table::Counters => Item::Counter(
            row.try_get(0).map_err(get_err)?,
            row.try_get(1).map_err(get_err)?,
        ),
        Table::Whitelist => Item::Listed(WhitelistEntry {
            info_hash: hash_bytes(row.try_get(0).map_err(get_err)?)?,
            added_at: row.try_get(1).map_err(get_err)?,
        }),
        Table::Keys => {
            let text: String = row.try_get(0).map_err(get_err)?;
            let key = Key::parse(text.as_bytes())
                .map_err(|e| format!("{name} row: key {text:?}: {e}"))?;
            Item::Key(AuthKey {
                key,
                valid_until: row.try_get(1).map_err(get_err)?,
                created_at: row.try_get(2).map_err(get_err)?,
            })
        }
        Table::ClientRules => {
            let prefix: String = row.try_get(0).map_err(get_err)?;
            let kind: String = row.try_get(1).map_err(get_err)?;
            Item::Rule(ClientRule {
                kind: RuleKind::parse(&kind)
                    .ok_or_else(|| format!("{name} row {prefix:?}: kind {kind:?}"))?,
                prefix,
                added_at: row.try_get(2).map_err(get_err)?,
            })
        }
    })
}

/// A count read from a row: never negative, in any layout.
pub(crate) fn non_negative(t: Table, what: &str, n: i64) -> Result<i64, String> {
    if n < 0 {
        Err(format!("{} row: negative {what} {n}", t.name()))
    } else {
        Ok(n)
    }
}
