//! Undo actions for a sequence of steps: pushed as each step succeeds,
//! run in reverse on failure, dropped on success.

type Action = Box<dyn FnOnce() -> Result<(), String> + Send>;

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
        action: impl FnOnce() -> Result<(), String> + Send + 'static,
    ) {
        self.actions.push((what, Box::new(action)));
    }

    /// Undoes every step, last first; a failing undo is logged and the
    /// rest still run.
    pub fn rollback(self) {
        for (what, action) in self.actions.into_iter().rev() {
            tracing::info!(step = what, "undoing");
            if let Err(e) = action() {
                tracing::warn!(step = what, error = %e, "undo failed");
            }
        }
    }

    /// Keeps what was done.
    pub fn commit(mut self) {
        self.actions.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn rollback_runs_in_reverse_past_failures_and_commit_runs_nothing() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut undo = Undo::default();
        for (name, ok) in [("a", true), ("b", false), ("c", true)] {
            let log = log.clone();
            undo.push(name, move || {
                log.lock().unwrap().push(name);
                if ok { Ok(()) } else { Err("boom".into()) }
            });
        }
        undo.rollback();
        assert_eq!(*log.lock().unwrap(), ["c", "b", "a"]);

        let mut undo = Undo::default();
        let l = log.clone();
        undo.push("x", move || {
            l.lock().unwrap().push("x");
            Ok(())
        });
        undo.commit();
        assert_eq!(log.lock().unwrap().len(), 3);
    }
}
