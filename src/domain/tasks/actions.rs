//! What staff do with a task (take, done, dismiss), inside a writer job:
//! the task's state is checked in the same transaction that journals the
//! step, so two handhelds racing for one task get one winner.

use chrono::{DateTime, Utc};

use super::{Task, get};
use crate::db::{StoreError, WriteTx};
use crate::domain::pickup;
use crate::event::{EventBody, NewEvent, TaskDismissed, TaskDone, TaskTaken, now_millis};

/// Why a step was refused; the API answers 404 or 409 with the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("there is no task {0:?}; reload the task list")]
    Unknown(String),
    #[error("task {task_id} is already {state}; reload the task list")]
    Closed { task_id: String, state: String },
    #[error("task {task_id} is taken by {by:?}; ask them, or pick another task")]
    TakenBy { task_id: String, by: String },
}

/// The task, or why there is none.
fn existing(w: &WriteTx<'_>, task_id: &str) -> Result<Result<Task, Refusal>, StoreError> {
    Ok(get(w.conn(), task_id)?.ok_or_else(|| Refusal::Unknown(task_id.to_string())))
}

fn closed(t: &Task) -> Refusal {
    Refusal::Closed {
        task_id: t.task_id.clone(),
        state: t.state.clone(),
    }
}

/// Journal one step and answer with the task as it now is.
fn step(
    w: &mut WriteTx<'_>,
    device: &str,
    task_id: &str,
    body: EventBody,
) -> Result<Task, StoreError> {
    w.append(NewEvent::new(now_millis(), device, body))?;
    get(w.conn(), task_id)?
        .ok_or_else(|| StoreError::Rejected(format!("task {task_id} vanished while updating it")))
}

/// `by` takes an open task. Taking one's own task again changes nothing.
pub fn take(
    w: &mut WriteTx<'_>,
    device: &str,
    task_id: &str,
    by: &str,
) -> Result<Result<Task, Refusal>, StoreError> {
    let t = match existing(w, task_id)? {
        Ok(t) => t,
        Err(r) => return Ok(Err(r)),
    };
    match t.state.as_str() {
        "open" => {}
        "taken" if t.taken_by.as_deref() == Some(by) => return Ok(Ok(t)),
        "taken" => {
            return Ok(Err(Refusal::TakenBy {
                task_id: t.task_id,
                by: t.taken_by.unwrap_or_default(),
            }));
        }
        _ => return Ok(Err(closed(&t))),
    }
    let body = EventBody::TaskTaken(TaskTaken {
        task_id: task_id.into(),
        by: by.into(),
    });
    step(w, device, task_id, body).map(Ok)
}

/// End an open or taken task with the event `make` builds from it; a
/// task already in `end_state` is answered as it is (a resent request).
fn end(
    w: &mut WriteTx<'_>,
    device: &str,
    task_id: &str,
    end_state: &str,
    make: impl FnOnce(Task) -> EventBody,
) -> Result<Result<Task, Refusal>, StoreError> {
    let t = match existing(w, task_id)? {
        Ok(t) => t,
        Err(r) => return Ok(Err(r)),
    };
    match t.state.as_str() {
        "open" | "taken" => {}
        s if s == end_state => return Ok(Ok(t)),
        _ => return Ok(Err(closed(&t))),
    }
    step(w, device, task_id, make(t)).map(Ok)
}

/// A person says the task is done (`by`, else whoever took it). The store
/// looks again at `check_at` where it can see the problem
/// ([`super::verifiable`]). Done again changes nothing.
pub fn done(
    w: &mut WriteTx<'_>,
    device: &str,
    task_id: &str,
    by: Option<String>,
    check_at: DateTime<Utc>,
) -> Result<Result<Task, Refusal>, StoreError> {
    let done = end(w, device, task_id, "done", |t| {
        EventBody::TaskDone(TaskDone {
            task_id: t.task_id,
            by: by.or(t.taken_by),
            confirmed_by: None,
            check_at: super::verifiable(&t.alert_code, &t.subject).then_some(check_at),
        })
    })?;
    match done {
        // Putting a pickup order's items back is recorded on the order
        // too, as `POST /v1/orders/{id}/returned` does; its alert resolving
        // confirms this task. Already recorded there: nothing more to do.
        Ok(t) if t.alert_code == pickup::RETURN_ALERT => {
            let _already_returned = pickup::pick::returned(w, device, &t.subject)?;
            existing(w, task_id)
        }
        other => Ok(other),
    }
}

/// A person dismisses an open or taken task with a reason. Dismissing it
/// again changes nothing.
pub fn dismiss(
    w: &mut WriteTx<'_>,
    device: &str,
    task_id: &str,
    by: Option<String>,
    reason: String,
) -> Result<Result<Task, Refusal>, StoreError> {
    end(w, device, task_id, "dismissed", |t| {
        EventBody::TaskDismissed(TaskDismissed {
            task_id: t.task_id,
            by: by.or(t.taken_by),
            reason,
        })
    })
}
