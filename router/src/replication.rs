//! Replication state of a shard's read replica (`shardctl status`): is it
//! replicating, and how far behind its primary is it.

use std::time::Duration;

use sqlx::{Connection, Row};

use crate::config::redact_url;
use crate::RouterError;

/// What a replica reports about itself (`SHOW REPLICA STATUS`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReplicaStatus {
    /// The replica (password redacted).
    pub url: String,
    /// `host:port` of the primary it reads from.
    pub primary: String,
    /// The IO thread (fetching the primary's binlog) runs.
    pub io_running: bool,
    /// The IO thread is (re)connecting to the primary (`Slave_IO_Running: Connecting`).
    pub io_connecting: bool,
    /// The SQL thread (applying it) runs.
    pub sql_running: bool,
    /// `Seconds_Behind_Master`: `None` while a thread is stopped (the lag is unknown).
    pub lag_s: Option<u64>,
    /// The last IO or SQL error, if any.
    pub last_error: Option<String>,
}

impl ReplicaStatus {
    /// Both threads run.
    pub fn replicating(&self) -> bool {
        self.io_running && self.sql_running
    }

    /// The lag column of `shardctl status`: `0 s`, `stopped (…)`.
    pub fn describe(&self) -> String {
        match (self.replicating(), self.lag_s) {
            (true, Some(s)) => format!("{s} s"),
            (true, None) => "unknown".to_owned(),
            (false, _) if self.io_connecting && self.sql_running => {
                "connecting to its primary".to_owned()
            }
            (false, _) => format!(
                "stopped ({})",
                match (self.io_running, self.sql_running) {
                    (false, false) => "io+sql",
                    (false, true) => "io",
                    _ => "sql",
                }
            ),
        }
    }
}

/// Asks the server at `url` for its replica status: `Ok(None)` when it is not a
/// replica (no primary configured).
///
/// # Errors
/// [`RouterError::Db`] when the server cannot be reached in `timeout` or refuses the
/// query (the user needs the `REPLICA MONITOR` or `REPLICATION CLIENT` privilege).
pub async fn replica_status(
    url: &str,
    timeout: Duration,
) -> Result<Option<ReplicaStatus>, RouterError> {
    let place = "replica";
    let shown = redact_url(url);
    let db = |e: sqlx::Error| RouterError::db(place, e);
    let run = async {
        let mut conn = sqlx::MySqlConnection::connect(url).await.map_err(db)?;
        // the text protocol: SHOW statements are not preparable on every server
        let rows = sqlx::raw_sql("SHOW SLAVE STATUS")
            .fetch_all(&mut conn)
            .await
            .map_err(db)?;
        let _ = conn.close().await;
        let Some(row) = rows.into_iter().next() else {
            return Ok(None);
        };
        let text = |col: &str| -> Result<String, RouterError> {
            // MariaDB returns these as VARCHAR or BLOB depending on the version
            row.try_get::<String, _>(col)
                .or_else(|_| {
                    row.try_get::<Vec<u8>, _>(col)
                        .map(|b: Vec<u8>| String::from_utf8_lossy(&b).into_owned())
                })
                .map_err(db)
        };
        let lag: Option<u64> = row
            .try_get::<Option<u64>, _>("Seconds_Behind_Master")
            .or_else(|_| {
                row.try_get::<Option<i64>, _>("Seconds_Behind_Master")
                    .map(|v| v.and_then(|s| u64::try_from(s).ok()))
            })
            .map_err(db)?;
        let last_error = [text("Last_IO_Error")?, text("Last_SQL_Error")?]
            .into_iter()
            .filter(|e| !e.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        Ok(Some(ReplicaStatus {
            url: shown.clone(),
            primary: format!(
                "{}:{}",
                text("Master_Host")?,
                row.try_get::<u32, _>("Master_Port")
                    .or_else(|_| row.try_get::<u64, _>("Master_Port").map(|p| p as u32))
                    .map_err(db)?
            ),
            io_running: text("Slave_IO_Running")? == "Yes",
            io_connecting: text("Slave_IO_Running")? == "Connecting",
            sql_running: text("Slave_SQL_Running")? == "Yes",
            lag_s: lag,
            last_error: (!last_error.is_empty()).then_some(last_error),
        }))
    };
    tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| RouterError::Busy(format!("replica {shown}: no answer in {timeout:?}")))?
}
