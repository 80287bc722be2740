//! Progress reporting from a build to whoever watches it.

/// One named step of a build, numbered from 1 of `total`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// 1-based position.
    pub index: u32,
    /// Number of stages in this build.
    pub total: u32,
    /// What is happening, for people: "building the kernel (make -j2)".
    pub name: String,
}

/// Receives stage changes. Implementations must be cheap: builds call it
/// from their worker thread.
pub trait Progress: Send + Sync {
    /// A new stage began.
    fn stage(&self, stage: Stage);
}

/// Discards progress.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn stage(&self, _: Stage) {}
}

/// Numbers stages as they begin.
pub(crate) struct Stages<'a> {
    progress: &'a dyn Progress,
    next: u32,
    total: u32,
}

impl<'a> Stages<'a> {
    pub(crate) fn new(progress: &'a dyn Progress, total: u32) -> Self {
        Self {
            progress,
            next: 1,
            total,
        }
    }

    /// Renames the stage that began last (a download's byte count).
    pub(crate) fn update(&self, name: impl Into<String>) {
        self.progress.stage(Stage {
            index: self.next.saturating_sub(1).max(1),
            total: self.total,
            name: name.into(),
        });
    }

    pub(crate) fn begin(&mut self, name: impl Into<String>) {
        self.progress.stage(Stage {
            index: self.next,
            total: self.total,
            name: name.into(),
        });
        self.next += 1;
    }
}
