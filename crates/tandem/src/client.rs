//! The CLI side of the admin API: finds the running node and sends it one request.

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::path::Path;
use std::time::Duration;
use tandem_status::Status;

/// Where and how to reach a node's admin endpoint.
pub struct AdminTarget {
    pub base_url: String,
    pub basic_auth: Option<String>,
}

impl AdminTarget {
    /// From `--admin URL`, or from the `[admin]` table of `node.toml`. Only that table is read, so
    /// the CLI still reaches a node whose `cluster.toml` is being edited and is invalid.
    pub fn resolve(admin_url: Option<&str>, node_file: &Path) -> Result<Self> {
        let node_text = std::fs::read_to_string(node_file);
        let admin_table = node_text
            .as_ref()
            .ok()
            .and_then(|text| text.parse::<toml::Table>().ok())
            .and_then(|table| table.get("admin").and_then(|a| a.as_table()).cloned());
        let base_url = match admin_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => {
                if let Err(error) = &node_text {
                    bail!(
                        "cannot find the node's admin address: {}: {error} (use --admin URL, --node FILE or --config-dir DIR)",
                        node_file.display()
                    );
                }
                let listen = admin_table
                    .as_ref()
                    .and_then(|admin| admin.get("listen"))
                    .and_then(|listen| listen.as_str())
                    .unwrap_or("127.0.0.1:9080");
                format!("http://{listen}")
            }
        };
        let basic_auth = match admin_table {
            Some(admin) => match (
                admin.get("user").and_then(|u| u.as_str()),
                admin.get("password_file").and_then(|p| p.as_str()),
            ) {
                (Some(user), Some(password_file)) => {
                    let path = resolve_relative(node_file, Path::new(password_file));
                    let password = std::fs::read_to_string(&path)
                        .with_context(|| format!("reading admin password {}", path.display()))?;
                    use base64::Engine;
                    Some(format!(
                        "Basic {}",
                        base64::engine::general_purpose::STANDARD
                            .encode(format!("{user}:{}", password.trim()))
                    ))
                }
                _ => None,
            },
            None => None,
        };
        Ok(Self {
            base_url,
            basic_auth,
        })
    }

    /// Send one request; returns the parsed JSON body (or the text for non-JSON answers) and
    /// fails with the node's own error message on a non-2xx status.
    pub async fn call(&self, method: &str, path: &str) -> Result<serde_json::Value> {
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{}", self.base_url, path))
            .header(CONTENT_TYPE, "application/json");
        if let Some(auth) = &self.basic_auth {
            request = request.header(AUTHORIZATION, auth);
        }
        let request = request
            .body(Full::new(Bytes::new()))
            .context("building the admin request")?;
        let response = tokio::time::timeout(Duration::from_secs(10), client.request(request))
            .await
            .map_err(|_| anyhow!("no answer from {} within 10 s", self.base_url))?
            .with_context(|| {
                format!(
                    "cannot reach the node at {} (is `tandem run` up?)",
                    self.base_url
                )
            })?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .context("reading the admin answer")?
            .to_bytes();
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&body).into_owned())
        });
        if !status.is_success() {
            let message = value
                .get("error")
                .and_then(|e| e.as_str())
                .map(str::to_owned)
                .unwrap_or_else(|| value.to_string());
            bail!("{} ({status})", message.trim());
        }
        Ok(value)
    }

    /// The node's status document (`GET /api/status`), typed.
    pub async fn status(&self) -> Result<Status> {
        let value = self.call("GET", "/api/status").await?;
        serde_json::from_value(value)
            .with_context(|| format!("{} answered with no status document", self.base_url))
    }
}

/// Paths in `node.toml` are relative to the file's own directory.
pub fn resolve_relative(node_file: &Path, path: &Path) -> std::path::PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        node_file
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .join(path)
    }
}
