//! What the daemon provides to the admin endpoint ([`AdminBackend`]) and the vocabulary of the
//! operator's actions; the endpoint only asks and forwards.

use std::future::Future;
use tandem_status::Status;

/// What an operator can do to one real server (the appliance's buttons).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerAction {
    Online,
    Drain,
    /// `close_existing`: also close the connections the server already has.
    Halt {
        close_existing: bool,
    },
}

/// Outcome of an action: a human message, or an error with the HTTP status to answer with.
pub type ActionResult = Result<String, ActionError>;

#[derive(Debug, Clone)]
pub struct ActionError {
    pub status: u16,
    pub message: String,
}

impl ActionError {
    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: 404,
            message: message.into(),
        }
    }
    pub fn refused(message: impl Into<String>) -> Self {
        Self {
            status: 409,
            message: message.into(),
        }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self {
            status: 422,
            message: message.into(),
        }
    }
}

/// Implemented by the daemon: the admin endpoint only asks and forwards.
pub trait AdminBackend: Send + Sync + 'static {
    /// The status document served at `/api/status` and rendered by `/`.
    fn status(&self) -> Status;
    /// Prometheus text exposition.
    fn metrics(&self) -> String;
    fn server_action(&self, service: &str, server: &str, action: ServerAction) -> ActionResult;
    fn takeover(&self) -> impl Future<Output = ActionResult> + Send;
    fn release(&self) -> impl Future<Output = ActionResult> + Send;
    fn reload(&self) -> impl Future<Output = ActionResult> + Send;
}
