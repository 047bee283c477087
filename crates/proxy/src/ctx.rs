//! What every connection task needs besides its service: the shared stick tables and their clock, the token that
//! ends it (the proxy's shutdown, or for a connection its VIP's release), and the TCP relay threads when TCP mode
//! relays on them.

use std::sync::{Arc, Mutex};

use tandem_stick::{Clock, StickTables};
use tokio_util::sync::CancellationToken;

use crate::access_log::AccessLog;
use crate::relay::threads::RelayLoops;
use crate::vip_conns::VipScope;

/// The node's stick tables, shared with the replication session.
pub type SharedStickTables = Arc<Mutex<StickTables>>;

/// What every connection task needs besides its service.
#[derive(Clone)]
pub struct ConnCtx {
    pub(crate) stick: SharedStickTables,
    pub(crate) clock: Clock,
    /// The proxy's shutdown token; in a connection's context, its VIP scope's token (cancelled by shutdown too, and
    /// by a release of the VIP).
    pub(crate) shutdown: CancellationToken,
    /// The VIP scope of a connection (`None` in the proxy's own context).
    pub(crate) vip: Option<Arc<VipScope>>,
    /// TCP mode relays on these threads when set (see [`crate::TcpRelay`]).
    pub(crate) relay_loops: Option<Arc<RelayLoops>>,
    /// Where connections and requests are logged, when the node has an access log.
    pub(crate) access_log: Option<AccessLog>,
}

impl ConnCtx {
    /// The access log, if connections of `service` are logged.
    pub(crate) fn access_log_for(&self, service: &str) -> Option<&AccessLog> {
        self.access_log.as_ref().filter(|l| l.wants(service))
    }

    /// This connection's context: ended by `scope` (its VIP's release, or the proxy's shutdown).
    pub(crate) fn for_vip(&self, scope: Arc<VipScope>) -> ConnCtx {
        ConnCtx {
            stick: self.stick.clone(),
            clock: self.clock,
            shutdown: scope.end.clone(),
            vip: Some(scope),
            relay_loops: self.relay_loops.clone(),
            access_log: self.access_log.clone(),
        }
    }

    /// The connection was ended because its VIP was released (then its client is reset, not merely closed).
    pub(crate) fn released(&self) -> bool {
        self.vip.as_ref().is_some_and(|scope| scope.released())
    }
}
