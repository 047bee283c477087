//! What every connection task needs besides its service: the shared stick tables and their clock, the proxy's
//! shutdown token, and the TCP relay threads when TCP mode relays on them.

use std::sync::{Arc, Mutex};

use tandem_stick::{Clock, StickTables};
use tokio_util::sync::CancellationToken;

use crate::access_log::AccessLog;
use crate::relay::threads::RelayLoops;

/// The node's stick tables, shared with the replication session.
pub type SharedStickTables = Arc<Mutex<StickTables>>;

/// What every connection task needs besides its service.
#[derive(Clone)]
pub struct ConnCtx {
    pub(crate) stick: SharedStickTables,
    pub(crate) clock: Clock,
    pub(crate) shutdown: CancellationToken,
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
}
