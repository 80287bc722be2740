//! Long-running work the API hands back as an operation: started by one
//! request, polled with `GET /v1/operations/{id}`, cancelled with
//! `DELETE /v1/operations/{id}`.
//!
//! The registry is a short-lock map; the work itself runs on a blocking
//! thread and updates its operation through [`OpHandle`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use banger_api::{ErrorBody, ErrorCode, Operation, OperationKind, OperationStage, OperationState};
use banger_artifacts::{Progress, Stage};
use banger_sys::Cancel;

use crate::error::ApiError;

/// Most warnings one operation keeps.
const MAX_WARNINGS: usize = 100;

/// Ended operations are forgotten after this long.
const KEEP_ENDED: Duration = Duration::from_secs(3600);

/// One operation's live state.
#[derive(Debug)]
pub struct OpHandle {
    op: Mutex<Operation>,
    started: Instant,
    ended: Mutex<Option<Instant>>,
    /// Set by `DELETE /v1/operations/{id}`.
    pub cancel: Cancel,
    /// Woken on every stage change and at the end, for long polls.
    changed: tokio::sync::Notify,
}

impl OpHandle {
    fn lock(&self) -> MutexGuard<'_, Operation> {
        banger_sys::wait::lock(&self.op)
    }

    /// When the operation began (its request arrived).
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The operation's id.
    pub fn id(&self) -> String {
        self.lock().id.clone()
    }

    /// A copy of the operation as it is now.
    pub fn snapshot(&self) -> Operation {
        let mut op = self.lock().clone();
        let end = banger_sys::wait::lock(&self.ended).unwrap_or_else(Instant::now);
        op.elapsed_secs = end.duration_since(self.started).as_secs();
        op
    }

    /// Records where the build output goes.
    pub fn set_log(&self, log: &std::path::Path) {
        self.lock().log = Some(log.display().to_string());
    }

    /// Adds a warning the client shows as it follows the operation.
    pub fn warn(&self, line: impl Into<String>) {
        let line = line.into();
        {
            let mut op = self.lock();
            tracing::warn!(op = %op.id, "{line}");
            if op.warnings.len() < MAX_WARNINGS {
                op.warnings.push(line);
            } else if op.warnings.len() == MAX_WARNINGS {
                op.warnings.push("(more warnings left out)".to_owned());
            }
        }
        self.changed.notify_waiters();
    }

    /// Ends the operation successfully with `message`.
    pub fn succeed(&self, message: impl Into<String>) {
        self.end(OperationState::Succeeded, Some(message.into()), None);
    }

    /// Ends the operation with `error` (cancelled when the cancel flag is set).
    pub fn fail(&self, code: ErrorCode, message: impl Into<String>) {
        let state = if self.cancel.is_cancelled() {
            OperationState::Cancelled
        } else {
            OperationState::Failed
        };
        let id = self.lock().id.clone();
        let body = ErrorBody {
            code,
            message: message.into(),
            op_id: id,
        };
        self.end(state, None, Some(body));
    }

    fn end(&self, state: OperationState, message: Option<String>, error: Option<ErrorBody>) {
        {
            let mut op = self.lock();
            op.state = state;
            op.message = message;
            op.error = error;
            op.finished_at = Some(now());
        }
        *banger_sys::wait::lock(&self.ended) = Some(Instant::now());
        self.changed.notify_waiters();
    }

    /// The operation once it changes stage or ends, or after `wait`.
    pub async fn changed_within(&self, wait: Duration) -> Operation {
        let changed = self.changed.notified();
        tokio::pin!(changed);
        // Registered before the look, so no change in between is missed.
        changed.as_mut().enable();
        if !self.is_ended() && !wait.is_zero() {
            let _ = tokio::time::timeout(wait, changed).await;
        }
        self.snapshot()
    }

    /// Whether the operation has ended.
    pub fn is_ended(&self) -> bool {
        self.lock().state.is_terminal()
    }
}

impl Progress for OpHandle {
    fn stage(&self, stage: Stage) {
        tracing::info!(op = %self.lock().id, stage = stage.index, of = stage.total, "{}", stage.name);
        self.lock().stage = Some(OperationStage {
            index: stage.index,
            total: stage.total,
            name: stage.name,
        });
        self.changed.notify_waiters();
    }
}

/// Every operation the daemon remembers.
#[derive(Debug, Default)]
pub struct Operations {
    ops: Mutex<HashMap<String, Arc<OpHandle>>>,
    /// Set once the daemon stops: no new operation begins.
    stopping: std::sync::atomic::AtomicBool,
}

impl Operations {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<OpHandle>>> {
        banger_sys::wait::lock(&self.ops)
    }

    /// Registers a new running operation with id `id`. An id the daemon
    /// still remembers is refused (`conflict`): taking it over would leave
    /// the first operation impossible to poll or cancel.
    pub fn begin(
        &self,
        id: &str,
        kind: OperationKind,
        target: &str,
    ) -> Result<Arc<OpHandle>, ApiError> {
        let handle = Arc::new(OpHandle {
            op: Mutex::new(Operation {
                id: id.to_owned(),
                kind,
                target: target.to_owned(),
                state: OperationState::Running,
                stage: None,
                warnings: Vec::new(),
                message: None,
                error: None,
                log: None,
                started_at: now(),
                finished_at: None,
                elapsed_secs: 0,
            }),
            started: Instant::now(),
            changed: tokio::sync::Notify::new(),
            ended: Mutex::new(None),
            cancel: Cancel::new(),
        });
        let mut ops = self.lock();
        if self.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(ApiError::new(
                ErrorCode::Unavailable,
                "the daemon is shutting down; retry once it has restarted",
            ));
        }
        ops.retain(|_, h| {
            banger_sys::wait::lock(&h.ended).is_none_or(|t| t.elapsed() < KEEP_ENDED)
        });
        if ops.contains_key(id) {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!(
                    "operation id {id:?} is already in use; send another X-Banger-Op-Id or none"
                ),
            ));
        }
        ops.insert(id.to_owned(), handle.clone());
        Ok(handle)
    }

    /// One operation.
    pub fn get(&self, id: &str) -> Option<Arc<OpHandle>> {
        self.lock().get(id).cloned()
    }

    /// Cancels every running operation (the daemon is stopping); returns
    /// how many there were.
    pub fn cancel_running(&self) -> usize {
        let ops = self.lock();
        // Under the map's lock: a begin either ran before (and is cancelled
        // here) or runs after (and is refused).
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let running: Vec<Arc<OpHandle>> = ops.values().filter(|h| !h.is_ended()).cloned().collect();
        for h in &running {
            h.cancel.cancel();
        }
        running.len()
    }

    /// Waits, up to `timeout`, until no operation is running; returns
    /// whether none is.
    pub async fn all_ended(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let running = self.lock().values().filter(|h| !h.is_ended()).count();
            if running == 0 {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Snapshots of all, oldest first.
    pub fn list(&self) -> Vec<Operation> {
        let mut all: Vec<Operation> = self.lock().values().map(|h| h.snapshot()).collect();
        all.sort_by(|a, b| a.started_at.cmp(&b.started_at).then(a.id.cmp(&b.id)));
        all
    }
}

fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_and_end_states_show_in_snapshots() {
        let ops = Operations::default();
        let h = ops
            .begin("op-1", OperationKind::KernelPull, "generic-6.1")
            .unwrap();
        h.stage(Stage {
            index: 2,
            total: 5,
            name: "unpacking".into(),
        });
        let snap = ops.get("op-1").unwrap().snapshot();
        assert_eq!(snap.state, OperationState::Running);
        assert_eq!(snap.stage.unwrap().name, "unpacking");
        h.succeed("built");
        let snap = h.snapshot();
        assert_eq!(snap.state, OperationState::Succeeded);
        assert_eq!(snap.message.as_deref(), Some("built"));
        assert!(snap.finished_at.is_some());
    }

    #[test]
    fn an_id_in_use_is_refused_and_the_first_operation_kept() {
        let ops = Operations::default();
        let first = ops.begin("op-3", OperationKind::VmCreate, "web").unwrap();
        let err = ops
            .begin("op-3", OperationKind::ImagePull, "other")
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::Conflict);
        assert!(err.message.contains("already in use"), "{}", err.message);
        assert!(Arc::ptr_eq(&ops.get("op-3").unwrap(), &first));
        // An ended one is still remembered, so still refused.
        first.succeed("done");
        assert!(ops.begin("op-3", OperationKind::VmCreate, "web").is_err());
    }

    #[test]
    fn once_stopping_running_operations_are_cancelled_and_none_begins() {
        let ops = Operations::default();
        let running = ops.begin("op-4", OperationKind::VmCreate, "web").unwrap();
        assert_eq!(ops.cancel_running(), 1);
        assert!(running.cancel.is_cancelled());
        let err = ops
            .begin("op-5", OperationKind::VmCreate, "db")
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::Unavailable);
    }

    #[test]
    fn failure_after_cancel_is_cancelled() {
        let ops = Operations::default();
        let h = ops
            .begin("op-2", OperationKind::ImagePull, "debian-bookworm")
            .unwrap();
        h.cancel.cancel();
        h.fail(ErrorCode::OperationFailed, "cancelled");
        let snap = h.snapshot();
        assert_eq!(snap.state, OperationState::Cancelled);
        assert_eq!(snap.error.unwrap().op_id, "op-2");
        assert_eq!(ops.list().len(), 1);
    }
}
