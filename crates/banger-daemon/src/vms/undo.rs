//! Undo actions for a sequence of steps: pushed as each step succeeds (or
//! before a step that may fail half-way), run in reverse when the [`Undo`]
//! is dropped without [`Undo::commit`]. A `?` anywhere after a push
//! therefore rolls back: no tap, rule or process can leak through an early
//! return.

/// Why an undo action failed; logged, never returned.
pub type UndoError = Box<dyn std::error::Error + Send + Sync>;

type Action = Box<dyn FnOnce() -> Result<(), UndoError> + Send>;

/// The undo actions of the steps done so far.
#[derive(Default)]
pub struct Undo {
    actions: Vec<(&'static str, Action)>,
}

impl std::fmt::Debug for Undo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.actions.iter().map(|(what, _)| what))
            .finish()
    }
}

impl Undo {
    /// Records how to undo the step just done.
    pub fn push(
        &mut self,
        what: &'static str,
        action: impl FnOnce() -> Result<(), UndoError> + Send + 'static,
    ) {
        self.actions.push((what, Box::new(action)));
    }

    /// Keeps what was done.
    pub fn commit(mut self) {
        self.actions.clear();
    }
}

impl Drop for Undo {
    /// A failing undo is logged and the rest still run.
    fn drop(&mut self) {
        for (what, action) in self.actions.drain(..).rev() {
            tracing::info!(step = what, "undoing");
            if let Err(e) = action() {
                tracing::warn!(step = what, error = %crate::error::error_chain(&*e), "undo failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn recording(log: &Arc<Mutex<Vec<&'static str>>>, steps: &[(&'static str, bool)]) -> Undo {
        let mut undo = Undo::default();
        for &(name, ok) in steps {
            let log = log.clone();
            undo.push(name, move || {
                log.lock().unwrap().push(name);
                if ok { Ok(()) } else { Err("boom".into()) }
            });
        }
        undo
    }

    #[test]
    fn rollback_runs_in_reverse_past_failures_and_commit_runs_nothing() {
        let log = Arc::new(Mutex::new(Vec::new()));
        drop(recording(&log, &[("a", true), ("b", false), ("c", true)]));
        assert_eq!(*log.lock().unwrap(), ["c", "b", "a"]);
        recording(&log, &[("x", true)]).commit();
        assert_eq!(log.lock().unwrap().len(), 3);
    }

    #[test]
    fn an_early_return_rolls_back() {
        fn steps(log: &Arc<Mutex<Vec<&'static str>>>) -> Result<(), &'static str> {
            let undo = recording(log, &[("tap", true), ("rule", true)]);
            Err("a later step failed")?;
            undo.commit();
            Ok(())
        }
        let log = Arc::new(Mutex::new(Vec::new()));
        assert!(steps(&log).is_err());
        assert_eq!(*log.lock().unwrap(), ["rule", "tap"]);
    }
}
