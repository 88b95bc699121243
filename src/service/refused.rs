//! The service as a requester sees it when the store's access control refused it: every
//! request fails with that refusal (`E_ACCESSDENIED`), and there is nothing to release.
//!
//! DiskShadow starts without touching VSS and fails at the first command that needs it (`add
//! volume` calls `InitializeForBackup`); the shell does the same with this stand-in, so
//! `set context …` and the other settings still run and the refusal is told where Windows
//! tells it.

use super::error::ServiceError;

/// A service connection the store's access control refused.
#[derive(Debug, Clone)]
pub struct RefusedService {
    refusal: ServiceError,
}

impl RefusedService {
    pub fn new(refusal: ServiceError) -> Self {
        Self { refusal }
    }

    /// What every request gets (the protocol table generates the trait's methods).
    pub(super) fn refusal(&self) -> ServiceError {
        self.refusal.clone()
    }
}
