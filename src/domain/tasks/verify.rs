//! Looking again at tasks a person marked done: at the task's `check_at`
//! (`[tasks] verify_after_s` after the done), an alert still open means
//! the work was not done (a refill without stock on the shelf) and the
//! task reopens; an alert gone means the store saw it done
//! (`task_verified`). One task of the daemon runs [`run`].

use std::time::Duration;

use rusqlite::params;

use super::evidence;
use crate::db::{SqlContext, StoreError, WriteTx, Writer};
use crate::domain::alerts;
use crate::event::{EventBody, NewEvent, TaskReopened, TaskVerified, now_millis};
use crate::shutdown::Shutdown;

/// How often done tasks are looked at: `check_at` is kept to about this.
pub const PERIOD: Duration = Duration::from_secs(1);

/// Reopen or verify every done task whose `check_at` has come; returns
/// how many were looked at.
pub fn check_due(w: &mut WriteTx<'_>, now_ms: i64) -> Result<usize, StoreError> {
    let due: Vec<(String, String, String)> = {
        let mut st = w
            .conn()
            .prepare_cached(
                "SELECT task_id, alert_code, subject FROM tasks
                 WHERE state = 'done' AND confirmed_by IS NULL AND check_at_ms <= ?1
                 ORDER BY check_at_ms LIMIT 500",
            )
            .ctx("finding tasks to check")?;
        let rows = st
            .query_map(params![now_ms], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .ctx("finding tasks to check")?;
        rows.collect::<Result<_, _>>()
            .ctx("finding tasks to check")?
    };
    for (task_id, code, subject) in &due {
        let body = if alerts::is_open(w.conn(), code, subject)? {
            EventBody::TaskReopened(TaskReopened {
                task_id: task_id.clone(),
                reason: format!("marked done, but {subject} is still {code}"),
            })
        } else {
            EventBody::TaskVerified(TaskVerified {
                task_id: task_id.clone(),
                confirmed_by: evidence(code, subject).into(),
            })
        };
        w.append(NewEvent::new(now_millis(), "agent", body))?;
    }
    Ok(due.len())
}

/// Every [`PERIOD`], check the tasks that are due, until shutdown.
pub async fn run(writer: Writer, mut shutdown: Shutdown) {
    loop {
        let now_ms = chrono::Utc::now().timestamp_millis();
        if let Err(e) = writer.transact(move |w| check_due(w, now_ms)).await {
            tracing::warn!(error = %e, "cannot check done tasks; will retry");
        }
        if !shutdown.sleep(PERIOD).await {
            break;
        }
    }
}
