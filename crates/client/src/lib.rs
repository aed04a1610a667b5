//! A small client of the engine's HTTP API: what the CLI commands, the
//! order fan-out demo and scripts use to talk to a running engine.

use std::time::Duration;

use anyhow::{Context, anyhow};
use serde_json::Value;

/// Talks to one engine.
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    /// A client of the engine at `server` (`http://host:port`; a bare
    /// `host:port` means `http://host:port`).
    pub fn new(server: &str, token: Option<String>) -> anyhow::Result<Client> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(120))
            .build()
            .context("building the HTTP client")?;
        Ok(Client {
            http,
            base: base_url(server),
            token,
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let response = request.send().await.map_err(|error| {
            if error.is_connect() {
                anyhow!(
                    "cannot reach the engine at {}: is `courier serve` running there? \
                     Point at it with --server or COURIER_SERVER ({error})",
                    self.base
                )
            } else {
                anyhow!("talking to the engine at {}: {error}", self.base)
            }
        })?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        let message = body["error"]["message"].as_str().unwrap_or("no details");
        if status == reqwest::StatusCode::UNAUTHORIZED {
            return Err(anyhow!(
                "{status}: {message}; give the engine's token with --token or COURIER_TOKEN"
            ));
        }
        Err(anyhow!("{status}: {message}"))
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(self.request(reqwest::Method::GET, path)).await
    }

    pub async fn delete(&self, path: &str) -> anyhow::Result<Value> {
        self.send(self.request(reqwest::Method::DELETE, path)).await
    }

    pub async fn put_json(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.send(self.request(reqwest::Method::PUT, path).json(body))
            .await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.send(self.request(reqwest::Method::POST, path).json(body))
            .await
    }

    pub async fn post_ndjson(&self, path: &str, body: Vec<u8>) -> anyhow::Result<Value> {
        let request = self
            .request(reqwest::Method::POST, path)
            .header(reqwest::header::CONTENT_TYPE, "application/x-ndjson")
            .body(body);
        self.send(request).await
    }
}

/// `server` as a base URL: without a scheme, `http://` is meant.
fn base_url(server: &str) -> String {
    let server = server.trim().trim_end_matches('/');
    if server.contains("://") {
        server.to_owned()
    } else {
        format!("http://{server}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_without_a_scheme_means_http() {
        assert_eq!(base_url("localhost:7171"), "http://localhost:7171");
        assert_eq!(base_url("http://10.0.0.1:7171/"), "http://10.0.0.1:7171");
        assert_eq!(
            base_url("https://courier.example"),
            "https://courier.example"
        );
    }
}
