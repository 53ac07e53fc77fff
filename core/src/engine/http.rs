//! whatsapp-rust's HTTP needs (version check, media) served by the same reqwest client the
//! webhooks use, so the binary carries one HTTP and one TLS stack.

use whatsapp_rust::anyhow;
use whatsapp_rust::http::{HttpClient, HttpRequest, HttpResponse};

/// [`HttpClient`] over a shared `reqwest::Client`.
#[derive(Clone)]
pub struct ReqwestHttp(pub reqwest::Client);

#[whatsapp_rust::async_trait]
impl HttpClient for ReqwestHttp {
    async fn execute(&self, request: HttpRequest) -> anyhow::Result<HttpResponse> {
        let method = reqwest::Method::from_bytes(request.method.as_bytes())
            .map_err(|_| anyhow::anyhow!("unsupported HTTP method {}", request.method))?;
        let mut builder = self.0.request(method, &request.url);
        for (name, value) in &request.headers {
            builder = builder.header(name, value);
        }
        if let Some(body) = request.body {
            builder = builder.body(body.to_vec());
        }
        let response = builder.send().await?;
        let status_code = response.status().as_u16();
        let body = response.bytes().await?.to_vec();
        Ok(HttpResponse { status_code, body })
    }
}
