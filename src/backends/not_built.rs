//! A backend this build of termshare leaves out (its cargo feature is off). It stays in
//! the list so a share asking for it is refused at admission with the reason, the same
//! way as a backend whose program is missing, instead of "unknown backend".

use termshare_actors::{Backend, BackendError, BackendName, StartedWorker, WorkerSpec};

/// Stands in for the adapter of `name`, which needs the cargo feature `feature`.
pub(crate) struct NotBuilt {
    /// The backend's name, as policies and requests write it.
    pub name: &'static str,
    /// The cargo feature that builds its adapter.
    pub feature: &'static str,
}

impl NotBuilt {
    fn error(&self) -> BackendError {
        BackendError::Unavailable {
            backend: self.name.to_owned(),
            reason: format!(
                "this build of termshare has no {} backend (cargo feature `{}`)",
                self.name, self.feature
            ),
        }
    }
}

#[async_trait::async_trait]
impl Backend for NotBuilt {
    fn name(&self) -> BackendName {
        BackendName::new(self.name)
    }

    fn check(&self) -> Result<(), BackendError> {
        Err(self.error())
    }

    async fn start(&self, _spec: WorkerSpec) -> Result<StartedWorker, BackendError> {
        Err(self.error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backend_left_out_says_which_feature_builds_it() {
        let b = NotBuilt {
            name: "tty-share",
            feature: "tty-share",
        };
        assert_eq!(b.name(), BackendName::TTY_SHARE);
        let err = b.check().unwrap_err().to_string();
        assert!(err.contains("cargo feature `tty-share`"), "{err}");
    }
}
