//! The demo's staff-task beats: the low-stock alert of a shelf running
//! low opens a refill task on the staff page, staff take it, and the
//! store confirms it done by its own evidence once the delivery is on
//! the shelf.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::Narrator;
use super::pickup::refusal;
use super::rig::Rig;

/// Who takes the refill.
const STAFF: &str = "anna";

impl Rig {
    /// Wait until `deadline` for an open refill task for `sku`, say what
    /// the staff page shows and take it. Returns the task id.
    pub(super) async fn take_refill(
        &self,
        sku: &str,
        say: &Narrator,
        deadline: Instant,
    ) -> Option<String> {
        let task = loop {
            if let Some(task) = self.open_refill(sku).await {
                break task;
            }
            if Instant::now() > deadline {
                say.line(format!(
                    "staff page    no refill task for {sku} showed up (see the agent log)"
                ));
                return None;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        let text = |k: &str| task.get(k).and_then(Value::as_str).unwrap_or("?");
        let id = text("task_id").to_string();
        // The message already says how many to bring.
        say.line(format!("staff page    task: {} ({id})", text("message")));
        match self
            .api_post(&format!("/v1/tasks/{id}/take"), json!({"by": STAFF}))
            .await
        {
            Ok((200, _)) => say.line(format!("staff         {STAFF} takes {id}")),
            Ok((status, answer)) => say.line(format!(
                "staff         {STAFF} cannot take {id} (HTTP {status} {})",
                refusal(&answer)
            )),
            Err(e) => say.line(format!("staff         {e}")),
        }
        Some(id)
    }

    /// The first open or taken refill task for `sku`, as the API lists it.
    async fn open_refill(&self, sku: &str) -> Option<Value> {
        let Ok((200, answer)) = self.api_get("/v1/tasks?open=true").await else {
            return None;
        };
        answer
            .get("tasks")?
            .as_array()?
            .iter()
            .find(|t| {
                t.get("task").and_then(Value::as_str) == Some("refill")
                    && t.get("sku").and_then(Value::as_str) == Some(sku)
            })
            .cloned()
    }

    /// After the delivery: the store should have marked the task done by
    /// its own evidence (the alert resolving). If it is still open, staff
    /// mark it done on the staff page; the store checks it later.
    pub(super) async fn refill_outcome(&self, id: &str, say: &Narrator) {
        let task = match self.api_get(&format!("/v1/tasks/{id}")).await {
            Ok((200, answer)) => answer.get("task").cloned().unwrap_or(Value::Null),
            Ok((status, answer)) => {
                say.line(format!(
                    "staff page    {id}: HTTP {status} {}",
                    refusal(&answer)
                ));
                return;
            }
            Err(e) => {
                say.line(format!("staff page    {e}"));
                return;
            }
        };
        let text = |k: &str| task.get(k).and_then(Value::as_str);
        if text("state") == Some("done") {
            say.line(format!(
                "staff page    {id} done, confirmed_by {}: the store saw the refill by itself",
                text("confirmed_by").unwrap_or("nobody yet")
            ));
            return;
        }
        match self
            .api_post(&format!("/v1/tasks/{id}/done"), json!({"by": STAFF}))
            .await
        {
            Ok((200, _)) => say.line(format!(
                "staff         {STAFF} marks {id} done (it was {}); the store checks it later",
                text("state").unwrap_or("?")
            )),
            Ok((status, answer)) => say.line(format!(
                "staff         {STAFF} cannot mark {id} done (HTTP {status} {})",
                refusal(&answer)
            )),
            Err(e) => say.line(format!("staff         {e}")),
        }
    }
}
