//! The money invariant (DESIGN.md "Money invariant"): for every asset,
//! Σ over shards of (available + frozen), fee accounts included,
//! = Σ completed deposits − Σ completed withdrawals.

use std::collections::BTreeMap;

use crate::{RouterError, ShardMap};
use domain::Amount;

/// One asset's totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AssetTotals {
    /// Σ (available + frozen) over all shards.
    pub balances: Amount,
    /// Σ completed deposits.
    pub deposits: Amount,
    /// Σ completed withdrawals (amount, fee included).
    pub withdrawals: Amount,
}

impl AssetTotals {
    /// Whether the invariant holds for this asset.
    pub fn holds(&self) -> bool {
        self.deposits
            .checked_sub(self.withdrawals)
            .is_ok_and(|expected| expected == self.balances)
    }
}

/// Totals per asset over every shard.
///
/// # Errors
/// Database errors naming the shard; sums out of range.
pub async fn conservation(shards: &ShardMap) -> Result<BTreeMap<String, AssetTotals>, RouterError> {
    let mut out: BTreeMap<String, AssetTotals> = BTreeMap::new();
    for (shard, pool) in shards.iter() {
        let place = |e| RouterError::db_on_shard(shard.get(), e);
        let queries = [
            ("SELECT currency, CAST(SUM(available + frozen) AS CHAR) FROM account_balances GROUP BY currency", 'b'),
            ("SELECT currency, CAST(SUM(amount) AS CHAR) FROM deposits WHERE status = 'completed' GROUP BY currency", 'd'),
            ("SELECT currency, CAST(SUM(amount) AS CHAR) FROM withdrawals WHERE status = 'completed' GROUP BY currency", 'w'),
        ];
        for (sql, tag) in queries {
            let rows: Vec<(String, String)> =
                sqlx::query_as(sql).fetch_all(pool).await.map_err(place)?;
            for (currency, sum) in rows {
                let v = Amount::from_db_str(&sum)?;
                let t = out.entry(currency).or_default();
                let slot = match tag {
                    'b' => &mut t.balances,
                    'd' => &mut t.deposits,
                    _ => &mut t.withdrawals,
                };
                *slot = slot.checked_add(v)?;
            }
        }
    }
    Ok(out)
}
