//! Choosing the real server for a new connection or request: persistence first, then the balancer, skipping
//! servers whose connect already failed for this client.
//!
//! Rules (the appliance's):
//! - a persistent client goes back to its server while that server is healthy and not halted (a drained or
//!   weight-0 server still takes its persistent clients);
//! - `last-successful` is stricter: the shared entry is followed only while its server is healthy *and* Online
//!   with a weight, otherwise the service re-balances and the entry moves (and stays moved);
//! - a persistent server that is down or halted is never used: the client is re-balanced and the entry updated.

use std::net::IpAddr;

use tandem_config::model::PersistenceMode;

use tandem_stick::StickKey;

use crate::ctx::ConnCtx;
use crate::shared::lock;
use crate::state::ServiceRuntime;

/// Server choice for one connection (TCP) or one request (HTTP), with retries.
pub(crate) struct Route<'a> {
    svc: &'a ServiceRuntime,
    ctx: &'a ConnCtx,
    key: Option<StickKey>,
    tried: Vec<usize>,
}

impl<'a> Route<'a> {
    pub(crate) fn new(svc: &'a ServiceRuntime, ctx: &'a ConnCtx, client: IpAddr) -> Self {
        let key = match svc.cfg.persistence.mode {
            PersistenceMode::SourceIp => Some(StickKey::SourceIp(client)),
            PersistenceMode::LastSuccessful => Some(StickKey::Service),
            PersistenceMode::None | PersistenceMode::HttpCookie => None,
        };
        Self {
            svc,
            ctx,
            key,
            tried: Vec::new(),
        }
    }

    /// Next server to try, or `None` when no usable server is left. `cookie` is the server label named by an
    /// http-cookie persistence cookie, if the request carried one.
    pub(crate) fn choose(&mut self, cookie: Option<&str>) -> Option<usize> {
        let chosen = self.choose_server(cookie);
        // Another server after a failed connect: a retry, counted on the server that failed.
        if chosen.is_some()
            && let Some(&failed) = self.tried.last()
        {
            self.svc.servers[failed]
                .retries
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        chosen
    }

    fn choose_server(&mut self, cookie: Option<&str>) -> Option<usize> {
        let svc = self.svc;
        let persistent_ok =
            |i: usize| !self.tried.contains(&i) && svc.servers[i].usable_for_persistent();
        match (&self.key, svc.cfg.persistence.mode) {
            (_, PersistenceMode::HttpCookie) => {
                if let Some(i) = cookie
                    .and_then(|l| svc.index_of(l))
                    .filter(|&i| persistent_ok(i))
                {
                    return Some(i);
                }
                svc.balance(&self.tried)
            }
            (Some(key), mode) => {
                // Hold the table lock across decide-and-store so concurrent clients agree on one server.
                let now = self.ctx.clock.now_ms();
                let mut tables = lock(&self.ctx.stick);
                let Some(table) = tables.get_mut(&svc.cfg.label) else {
                    // No table (cannot happen after reconcile): balance without persistence.
                    return svc.balance(&self.tried);
                };
                let current = table.lookup(key, now).and_then(|l| svc.index_of(&l));
                let follow = |i: usize| {
                    if mode == PersistenceMode::LastSuccessful {
                        !self.tried.contains(&i) && svc.servers[i].usable_for_new()
                    } else {
                        persistent_ok(i)
                    }
                };
                if let Some(i) = current.filter(|&i| follow(i)) {
                    return Some(i);
                }
                let i = svc.balance(&self.tried)?;
                table.set(key, &svc.servers[i].label, now);
                Some(i)
            }
            (None, _) => svc.balance(&self.tried),
        }
    }

    /// The connect to server `i` failed: do not try it again for this client.
    pub(crate) fn failed(&mut self, i: usize) {
        self.tried.push(i);
    }
}
