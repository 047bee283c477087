//! The admin endpoint's backend: status, metrics, the per-server buttons and the cluster actions.

use super::Daemon;
use super::admin_states::SetError;
use crate::metrics;
use std::time::{Duration, Instant};
use tandem_admin::{ActionError, ActionResult, AdminBackend, ServerAction};
use tandem_cluster::driver::Command;
use tandem_proxy::AdminState;
use tandem_status::Status;

impl AdminBackend for Daemon {
    fn status(&self) -> Status {
        self.status_document()
    }

    fn metrics(&self) -> String {
        metrics::render(&self.status_document())
    }

    fn server_action(&self, service: &str, server: &str, action: ServerAction) -> ActionResult {
        self.server_action_inner(service, server, action)
    }

    async fn takeover(&self) -> ActionResult {
        if self.node.node.peer.is_none() {
            return Ok("standalone node: it is always active".into());
        }
        self.cluster
            .commands
            .send(Command::Takeover)
            .await
            .map_err(|_| ActionError::refused("the election is not running"))?;
        self.wait_for_state(&["active"], "takeover").await
    }

    async fn release(&self) -> ActionResult {
        if self.node.node.peer.is_none() {
            return Err(ActionError::refused(
                "standalone node: there is no peer to hand over to",
            ));
        }
        self.cluster
            .commands
            .send(Command::Release)
            .await
            .map_err(|_| ActionError::refused("the election is not running"))?;
        self.wait_for_state(&["standby"], "release").await
    }

    async fn reload(&self) -> ActionResult {
        self.reload_from_disk().await
    }
}

impl Daemon {
    fn server_action_inner(
        &self,
        service: &str,
        server: &str,
        action: ServerAction,
    ) -> ActionResult {
        let state = match action {
            ServerAction::Online => AdminState::Online,
            ServerAction::Drain => AdminState::Drain,
            ServerAction::Halt { close_existing } => AdminState::Halt { close_existing },
        };
        // Applied, replicated to the peer and saved in state_dir before the answer.
        self.admin_states
            .set_by_operator(&self.proxy, service, server, state)
            .map_err(|error| match error {
                SetError::NotFound(message) => ActionError::not_found(message),
                SetError::NotSaved(message) => ActionError {
                    status: 500,
                    message,
                },
            })?;
        Ok(format!(
            "{service}/{server}: {}",
            match action {
                ServerAction::Online => "online",
                ServerAction::Drain =>
                    "drain (persistent clients only; existing connections finish)",
                ServerAction::Halt {
                    close_existing: false,
                } => "halt (no new connections; existing ones finish)",
                ServerAction::Halt {
                    close_existing: true,
                } => "halt (no new connections; existing ones closed)",
            }
        ))
    }

    /// Wait (bounded) until the election reaches one of `states`, so the CLI reports the outcome.
    async fn wait_for_state(&self, states: &[&str], what: &str) -> ActionResult {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut status = self.cluster.status.clone();
        loop {
            let state = status.borrow().state.as_str();
            if states.contains(&state) {
                return Ok(format!("{what}: this node is now {state}"));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let last = status.borrow().last_event.clone().unwrap_or_default();
                return Err(ActionError::refused(format!(
                    "{what} did not complete within 5 s: this node is {state} ({last})"
                )));
            }
            let _ = tokio::time::timeout(left, status.changed()).await;
        }
    }
}
