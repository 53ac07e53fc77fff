//! The few gateway and sandbox calls the scenarios make outside the measured loops, each
//! checked, so that a scenario failing says which call failed and what the gateway answered.

use anyhow::{Context, Result, bail};
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, HeaderValue};
use serde_json::{Value, json};

/// A tenant's view of one gateway.
#[derive(Clone)]
pub struct Api {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// `Basic …`, computed once.
    pub auth: HeaderValue,
    http: reqwest::Client,
}

/// An answer: the status and the JSON body (`Null` when the body is not JSON).
pub struct Answer {
    /// The HTTP status.
    pub status: StatusCode,
    /// The body.
    pub body: Value,
}

/// The `Authorization` header value for `user` and `password`.
pub fn basic_auth(user: &str, password: &str) -> Result<HeaderValue> {
    // reqwest encodes it; building a request we never send borrows that encoder.
    let request = reqwest::Client::new()
        .get("http://127.0.0.1/")
        .basic_auth(user, Some(password))
        .build()
        .context("building a request to encode the credentials")?;
    request
        .headers()
        .get(AUTHORIZATION)
        .cloned()
        .context("reqwest set no Authorization header")
}

impl Api {
    /// A client for `base` with the credential `user:password`.
    pub fn new(base: &str, user: &str, password: &str) -> Result<Self> {
        Ok(Self {
            base: base.to_string(),
            auth: basic_auth(user, password)?,
            http: reqwest::Client::builder()
                .http1_only()
                .tcp_nodelay(true)
                .build()
                .context("building an HTTP client")?,
        })
    }

    /// The same credential on another gateway process.
    pub fn at(&self, base: &str) -> Self {
        Self {
            base: base.to_string(),
            ..self.clone()
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Answer> {
        let url = format!("{}{path}", self.base);
        let mut request = self
            .http
            .request(method.clone(), &url)
            .header(AUTHORIZATION, self.auth.clone());
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .with_context(|| format!("reading the answer to {method} {path}"))?;
        Ok(Answer {
            status,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        })
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Result<Answer> {
        self.send(reqwest::Method::GET, path, None).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: Value) -> Result<Answer> {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    /// Creates device `id`.
    pub async fn create_device(&self, id: &str) -> Result<()> {
        let answer = self.post("/devices", json!({ "device_id": id })).await?;
        expect_success(&answer, &format!("POST /devices ({id})"))
    }

    /// `GET /devices/{id}/login`, expecting a QR code; returns its link.
    pub async fn login_qr(&self, id: &str) -> Result<String> {
        let answer = self.get(&format!("/devices/{id}/login")).await?;
        expect_success(&answer, &format!("GET /devices/{id}/login"))?;
        answer.body["results"]["qr_link"]
            .as_str()
            .map(str::to_string)
            .with_context(|| {
                format!(
                    "GET /devices/{id}/login answered no qr_link: {}",
                    answer.body
                )
            })
    }

    /// Lets a fresh sandbox phone scan the QR code device `id` shows. The sandbox build's
    /// `/sandbox/devices/{id}/scan` reads the code the device holds and posts it to the
    /// sandbox's `/phone/scan`, exactly as the bench would after decoding the PNG; decoding
    /// thousands of 512×512 images here would only steal the gateway's CPU.
    pub async fn scan(&self, id: &str) -> Result<()> {
        let answer = self
            .send(
                reqwest::Method::POST,
                &format!("/sandbox/devices/{id}/scan"),
                None,
            )
            .await?;
        expect_success(&answer, &format!("POST /sandbox/devices/{id}/scan"))
    }

    /// `GET /devices/{id}/status`: whether the device is logged in right now.
    pub async fn logged_in(&self, id: &str) -> Result<bool> {
        let answer = self.get(&format!("/devices/{id}/status")).await?;
        expect_success(&answer, &format!("GET /devices/{id}/status"))?;
        answer.body["results"]["is_logged_in"]
            .as_bool()
            .with_context(|| format!("GET /devices/{id}/status: no is_logged_in: {}", answer.body))
    }

    /// `GET /devices`: every device's id and stored state.
    pub async fn device_states(&self) -> Result<Vec<(String, String)>> {
        let answer = self.get("/devices").await?;
        expect_success(&answer, "GET /devices")?;
        let list = answer.body["results"]
            .as_array()
            .with_context(|| format!("GET /devices answered no list: {}", answer.body))?;
        Ok(list
            .iter()
            .map(|d| {
                (
                    d["id"].as_str().unwrap_or_default().to_string(),
                    d["state"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect())
    }

    /// Registers a webhook endpoint at `url` for `state_changed` events.
    pub async fn create_webhook(&self, url: &str) -> Result<()> {
        let answer = self
            .post(
                "/webhooks",
                json!({ "url": url, "events": ["state_changed"] }),
            )
            .await?;
        expect_success(&answer, "POST /webhooks")
    }

    /// Whether `GET /ready` answers 200.
    pub async fn ready(&self) -> Result<bool> {
        Ok(self.get("/ready").await?.status == StatusCode::OK)
    }
}

/// Fails unless `answer` is a 2xx with code `SUCCESS`.
fn expect_success(answer: &Answer, what: &str) -> Result<()> {
    if answer.status.is_success() && answer.body["code"] == "SUCCESS" {
        return Ok(());
    }
    bail!("{what} answered {}: {}", answer.status, answer.body)
}

/// The sandbox's control API.
#[derive(Clone)]
pub struct SandboxControl {
    base: String,
    http: reqwest::Client,
}

/// A connection the sandbox holds.
pub struct Client {
    /// The sandbox's number for it; grows with every new connection.
    pub connection: u64,
    /// Whether it is logged in (has a device JID).
    pub logged_in: bool,
}

impl SandboxControl {
    /// The control API at `base` (`http://127.0.0.1:PORT`).
    pub fn new(base: &str) -> Self {
        Self {
            base: base.to_string(),
            http: reqwest::Client::new(),
        }
    }

    /// `GET /clients`: every live connection.
    pub async fn clients(&self) -> Result<Vec<Client>> {
        let list: Value = self
            .http
            .get(format!("{}/clients", self.base))
            .send()
            .await
            .context("GET sandbox /clients")?
            .json()
            .await
            .context("reading sandbox /clients")?;
        let list = list
            .as_array()
            .with_context(|| format!("sandbox /clients answered no list: {list}"))?;
        list.iter()
            .map(|c| {
                Ok(Client {
                    connection: c["connection"]
                        .as_u64()
                        .with_context(|| format!("sandbox client without a number: {c}"))?,
                    logged_in: c["state"] == "logged_in",
                })
            })
            .collect()
    }
}
