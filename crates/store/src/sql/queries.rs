//! Every query, rendered once per store for its backend from portable SQL.

use std::sync::Arc;

use sqlx::{AssertSqlSafe, SqlSafeStr, SqlStr};

use super::Dialect;
use crate::copy::TABLES;

pub(crate) struct Queries {
    pub(crate) load_torrent: SqlStr,
    pub(crate) save_torrent: SqlStr,
    pub(crate) increase_torrent: SqlStr,
    pub(crate) load_all_torrents: SqlStr,
    pub(crate) add_torrents_tail: String,
    pub(crate) add_to_counter: SqlStr,
    pub(crate) load_counter: SqlStr,
    pub(crate) save_counter: SqlStr,
    pub(crate) whitelist_add: SqlStr,
    pub(crate) whitelist_get: SqlStr,
    pub(crate) whitelist_remove: SqlStr,
    pub(crate) whitelist_load: SqlStr,
    pub(crate) key_add: SqlStr,
    pub(crate) key_get: SqlStr,
    pub(crate) key_remove: SqlStr,
    pub(crate) key_load: SqlStr,
    pub(crate) rule_add: SqlStr,
    pub(crate) rule_remove: SqlStr,
    pub(crate) rule_load: SqlStr,
    pub(crate) table_exists: SqlStr,
    pub(crate) applied_migrations: SqlStr,
    /// Per table (in `Table::ALL` order): reads in Shoal's and in Torrust's layout.
    pub(crate) export: [[SqlStr; 2]; TABLES],
    /// Per table: `INSERT INTO t (cols) ` and the tails for no merge, add, max.
    pub(crate) import_head: [String; TABLES],
    pub(crate) import_tail: [[String; 3]; TABLES],
    /// Per table: `SELECT <row> FROM t WHERE <pk> IN ` for merges.
    pub(crate) existing_head: [String; TABLES],
}

impl Queries {
    pub(crate) fn new<DB: Dialect>() -> Self {
        let q =
            |portable: &str| AssertSqlSafe(Arc::<str>::from(DB::render(portable))).into_sql_str();
        let upsert = DB::on_conflict_update;
        let new = DB::inserted;
        Queries {
            load_torrent: q("SELECT completed FROM torrents WHERE info_hash = ?"),
            save_torrent: q(&format!(
                "INSERT INTO torrents (info_hash, completed) VALUES (?, ?) {} completed = {}",
                upsert("info_hash"),
                new("completed")
            )),
            increase_torrent: q(&format!(
                "INSERT INTO torrents (info_hash, completed) VALUES (?, 1) {} completed = torrents.completed + 1",
                upsert("info_hash")
            )),
            load_all_torrents: q("SELECT info_hash, completed FROM torrents"),
            add_torrents_tail: DB::render(&format!(
                " {} completed = torrents.completed + {}",
                upsert("info_hash"),
                new("completed")
            )),
            add_to_counter: q(&format!(
                "INSERT INTO counters (`name`, `value`) VALUES (?, ?) {} `value` = counters.`value` + {}",
                upsert("`name`"),
                new("`value`")
            )),
            load_counter: q("SELECT `value` FROM counters WHERE `name` = ?"),
            save_counter: q(&format!(
                "INSERT INTO counters (`name`, `value`) VALUES (?, ?) {} `value` = {}",
                upsert("`name`"),
                new("`value`")
            )),
            // Re-listing keeps the original added_at: the no-op assignment works on every backend.
            whitelist_add: q(&format!(
                "INSERT INTO whitelist (info_hash, added_at) VALUES (?, ?) {} added_at = whitelist.added_at",
                upsert("info_hash")
            )),
            whitelist_get: q("SELECT info_hash, added_at FROM whitelist WHERE info_hash = ?"),
            whitelist_remove: q("DELETE FROM whitelist WHERE info_hash = ?"),
            whitelist_load: q("SELECT info_hash, added_at FROM whitelist"),
            key_add: q(&format!(
                "INSERT INTO `keys` (`key`, valid_until, created_at) VALUES (?, ?, ?) {} valid_until = {}, created_at = {}",
                upsert("`key`"),
                new("valid_until"),
                new("created_at")
            )),
            key_get: q("SELECT `key`, valid_until, created_at FROM `keys` WHERE `key` = ?"),
            key_remove: q("DELETE FROM `keys` WHERE `key` = ?"),
            key_load: q("SELECT `key`, valid_until, created_at FROM `keys`"),
            // A prefix added again changes its kind and keeps its added_at.
            rule_add: q(&format!(
                "INSERT INTO client_rules (prefix, kind, added_at) VALUES (?, ?, ?) {} kind = {}",
                upsert("prefix"),
                new("kind")
            )),
            rule_remove: q("DELETE FROM client_rules WHERE prefix = ?"),
            rule_load: q("SELECT prefix, kind, added_at FROM client_rules"),
            table_exists: q(DB::TABLE_EXISTS),
            applied_migrations: q(
                "SELECT version, description, success, checksum FROM _sqlx_migrations ORDER BY version",
            ),
            export: {
                let big = DB::BIGINT;
                [
                    [
                        q("SELECT info_hash, completed FROM torrents"),
                        q(&format!(
                            "SELECT CAST(id AS {big}), info_hash, CAST(completed AS {big}) FROM torrents"
                        )),
                    ],
                    [
                        q("SELECT `name`, `value` FROM counters"),
                        q(&format!(
                            "SELECT CAST(id AS {big}), metric_name, CAST(`value` AS {big}) FROM torrent_aggregate_metrics WHERE metric_name = 'torrents_downloads_total'"
                        )),
                    ],
                    [
                        q("SELECT info_hash, added_at FROM whitelist"),
                        q(&format!(
                            "SELECT CAST(id AS {big}), info_hash FROM whitelist"
                        )),
                    ],
                    [
                        q("SELECT `key`, valid_until, created_at FROM `keys`"),
                        q(&format!(
                            "SELECT CAST(id AS {big}), `key`, CAST(valid_until AS {big}) FROM `keys`"
                        )),
                    ],
                    // Torrust has no client rules: `torrust::table` names no table, never read.
                    [
                        q("SELECT prefix, kind, added_at FROM client_rules"),
                        q("SELECT prefix, kind, added_at FROM client_rules"),
                    ],
                ]
            },
            import_head: [
                "INSERT INTO torrents (info_hash, completed) ",
                "INSERT INTO counters (`name`, `value`) ",
                "INSERT INTO whitelist (info_hash, added_at) ",
                "INSERT INTO `keys` (`key`, valid_until, created_at) ",
                "INSERT INTO client_rules (prefix, kind, added_at) ",
            ]
            .map(DB::render),
            import_tail: {
                let counted = |table: &str, pk: &str, col: &str| {
                    [
                        String::new(),
                        DB::render(&format!(
                            " {} {col} = {table}.{col} + {}",
                            upsert(pk),
                            new(col)
                        )),
                        DB::render(&format!(
                            " {} {col} = {}({table}.{col}, {})",
                            upsert(pk),
                            DB::GREATEST,
                            new(col)
                        )),
                    ]
                };
                // Whitelist entries and keys already in the destination are kept as they are.
                let kept = |table: &str, pk: &str, col: &str| {
                    let keep = DB::render(&format!(" {} {col} = {table}.{col}", upsert(pk)));
                    [String::new(), keep.clone(), keep]
                };
                [
                    counted("torrents", "info_hash", "completed"),
                    counted("counters", "`name`", "`value`"),
                    kept("whitelist", "info_hash", "added_at"),
                    kept("`keys`", "`key`", "valid_until"),
                    kept("client_rules", "prefix", "kind"),
                ]
            },
            existing_head: [
                "SELECT info_hash, completed FROM torrents WHERE info_hash IN ",
                "SELECT `name`, `value` FROM counters WHERE `name` IN ",
                "SELECT info_hash, added_at FROM whitelist WHERE info_hash IN ",
                "SELECT `key`, valid_until, created_at FROM `keys` WHERE `key` IN ",
                "SELECT prefix, kind, added_at FROM client_rules WHERE prefix IN ",
            ]
            .map(DB::render),
        }
    }
}
