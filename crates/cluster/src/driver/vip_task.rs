//! The VIP task: the daemon's VIP layer behind a trait, driven one operation at a time in the order the election
//! asked, each result reported back as an election input.

use std::future::Future;
use std::net::IpAddr;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::election::{Input, VipOp};

/// The VIP layer, implemented by the daemon with the vip crate (or by nothing when `manage_vips = false`).
/// Calls are made one at a time, in the order the election asked for them.
pub trait VipControl: Send + 'static {
    /// Add every VIP and announce it (gratuitous ARP / unsolicited NA). Idempotent. `drain`: the peer's address
    /// when the peer still holds the VIPs and hands them over on purpose ([`crate::election::Election::vip_op_is_handover`]):
    /// segments of connections it still serves may reach this node once the clients follow the announcement, and
    /// go back to it for a while instead of being reset here.
    fn acquire(&mut self, drain: Option<IpAddr>)
    -> impl Future<Output = Result<(), String>> + Send;
    /// Remove every VIP (and stop any announcement still running). Idempotent. `drain`: the peer's address when
    /// the peer already holds the VIPs (a planned handover): this node may keep serving its connections in flight
    /// for a while, the addresses kept but no longer answered for, before removing them.
    fn release(&mut self, drain: Option<IpAddr>)
    -> impl Future<Output = Result<(), String>> + Send;
    /// Announce the VIPs again.
    fn announce(&mut self) -> impl Future<Output = Result<(), String>> + Send;
    /// Stop announcing the VIPs, keeping them: this node has just offered them to its peer (a planned handover,
    /// [`crate::election::Election::handing_over`]). A round still to come of its own burst (or a refresh) after the taker's first
    /// announcement would point the clients back here just before the removal.
    fn fall_silent(&mut self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// What the VIP task is asked to do.
pub(super) enum VipJob {
    /// An operation of the election, reported back; with the peer's address for a planned handover's drain.
    Op(VipOp, Option<IpAddr>),
    /// [`VipControl::fall_silent`] (not reported: the election does not wait for it).
    FallSilent,
}

/// Runs VIP operations one at a time, in order, and reports each result.
pub(super) async fn run_vips(
    mut vips: impl VipControl,
    mut ops: mpsc::UnboundedReceiver<VipJob>,
    results: mpsc::UnboundedSender<Input>,
    timeout: Duration,
) {
    while let Some(job) = ops.recv().await {
        let (op, drain) = match job {
            VipJob::Op(op, drain) => (op, drain),
            VipJob::FallSilent => {
                vips.fall_silent().await;
                continue;
            }
        };
        let outcome = match op {
            VipOp::Acquire => tokio::time::timeout(timeout, vips.acquire(drain)).await,
            VipOp::Release => tokio::time::timeout(timeout, vips.release(drain)).await,
            VipOp::Announce => tokio::time::timeout(timeout, vips.announce()).await,
        };
        let input = match outcome {
            Ok(Ok(())) => match op {
                VipOp::Acquire => Input::VipsAcquired,
                VipOp::Release => Input::VipsReleased,
                VipOp::Announce => Input::VipsAnnounced,
            },
            Ok(Err(error)) => Input::VipFailure { op, error },
            Err(_) => Input::VipFailure {
                op,
                error: format!("no answer within {timeout:?}"),
            },
        };
        if results.send(input).is_err() {
            return;
        }
    }
}
