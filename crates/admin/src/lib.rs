//! The node's admin endpoint: HTTP(S) on `[admin] listen` in `node.toml` (default
//! `127.0.0.1:9080`) and the local CLI's UNIX socket (`[admin] socket`).
//!
//! It owns only the admin transport: the listeners and their limits (`server`), who may do what
//! (`rules`: Host, Origin, `X-Requested-By`, credentials), password verification at a bounded
//! cost (`auth`), the TLS identity (`tls`), the socket file (`socket`), routing and the JSON wire
//! form (`routes`) and the System Overview page (`page`). What the answers contain comes from an
//! [`AdminBackend`] that the daemon implements, so this crate knows nothing about the proxy or the
//! election.
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `/` | System Overview page (HTML, refreshes itself) |
//! | GET | `/api/status` | the node's status as JSON (schema in `docs/admin-api.md`) |
//! | GET | `/metrics` | Prometheus text format |
//! | GET | `/api/admin` | this endpoint: listen URL, TLS fingerprint, whether credentials are set |
//! | POST | `/api/servers/{service}/{server}/{online\|drain\|halt}` | appliance buttons; `?close=1` with halt closes existing connections |
//! | POST | `/api/takeover`, `/api/release`, `/api/reload` | cluster actions |

mod auth;
mod backend;
mod page;
mod routes;
mod rules;
mod server;
pub mod socket;
pub mod tls;

pub use auth::Credentials;
pub use backend::{ActionError, ActionResult, AdminBackend, ServerAction};
pub use page::{render_overview, urlencode};
pub use rules::REQUESTED_BY;
pub use server::{HttpOptions, Limits, MAX_BODY, serve, serve_metrics, serve_unix};
pub use tandem_status::{AdminEndpoint, Status};
