//! `ClientRuleStore` for every backend: client rules by peer-id prefix.

use futures_util::TryStreamExt;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Type};

use super::rows::rule_row;
use super::{Dialect, SqlStore};
use crate::{ClientRule, ClientRuleStore, StoreError};

impl<DB: Dialect> ClientRuleStore for SqlStore<DB>
where
    for<'c> &'c mut <DB as Database>::Connection: Executor<'c, Database = DB>,
    <DB as Database>::Arguments: IntoArguments<DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Decode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Vec<u8>: Decode<'q, DB> + Type<DB>,
    for<'q> String: Decode<'q, DB> + Type<DB>,
    usize: ColumnIndex<<DB as Database>::Row>,
{
    async fn add_client_rule(&self, r: &ClientRule) -> Result<(), StoreError> {
        sqlx::query(self.q.rule_add.clone())
            .bind(r.prefix.as_str())
            .bind(r.kind.as_str())
            .bind(r.added_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn remove_client_rule(&self, prefix: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(self.q.rule_remove.clone())
            .bind(prefix)
            .execute(&self.pool)
            .await?;
        Ok(DB::rows_affected(&done) > 0)
    }

    async fn load_client_rules(&self) -> Result<Vec<ClientRule>, StoreError> {
        let mut rows = sqlx::query(self.q.rule_load.clone()).fetch(&self.pool);
        let mut out = Vec::new();
        while let Some(row) = rows.try_next().await? {
            out.push(rule_row(&row)?);
        }
        out.sort_by(|a, b| a.prefix.cmp(&b.prefix));
        Ok(out)
    }
}
