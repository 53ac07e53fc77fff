//! `GET /metrics` as a test reads it: the samples of one scrape, parsed from the Prometheus text
//! format, looked up by name and labels.

use std::collections::HashMap;

use reqwest::StatusCode;

use super::Gateway;

/// One sample: its name, its labels in the order written, its value.
#[derive(Debug, Clone)]
pub struct Sample {
    /// e.g. `wagate_logins_started_total`.
    pub name: String,
    /// `(label, value)` pairs, unescaped.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
}

/// The samples of one scrape.
#[derive(Debug, Clone)]
pub struct Scrape {
    /// Every sample by `name{label="value",…}`, labels sorted by name, without `node`.
    pub samples: HashMap<String, f64>,
    /// Every sample, in the order written.
    pub series: Vec<Sample>,
    /// The scrape as it came.
    pub text: String,
}

impl Scrape {
    /// Parses the Prometheus text format (0.0.4); panics on a line it cannot read.
    pub fn parse(text: &str) -> Scrape {
        let series: Vec<Sample> = text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|line| parse_sample(line).unwrap_or_else(|| panic!("unreadable sample: {line}")))
            .collect();
        let samples = series
            .iter()
            .map(|s| {
                // Every series carries its node's id; lookups name the labels that tell
                // series of one node apart.
                let labels: Vec<(&str, &str)> = s
                    .labels
                    .iter()
                    .filter(|(k, _)| k != "node")
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                (key(&s.name, &labels), s.value)
            })
            .collect();
        Scrape {
            samples,
            series,
            text: text.to_string(),
        }
    }

    /// The sample `name` with exactly `labels` (in any order), if the scrape has it.
    pub fn find(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples.get(&key(name, labels)).copied()
    }

    /// The sample `name` with exactly `labels`; 0 when the scrape has none (a counter's labels
    /// appear once it first counts).
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.find(name, labels).unwrap_or(0.0)
    }

    /// Every sample named `name`.
    pub fn all(&self, name: &str) -> Vec<&Sample> {
        self.series.iter().filter(|s| s.name == name).collect()
    }
}

/// `name{a="x",b="y"}` with the labels sorted, or `name` without labels.
fn key(name: &str, labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return name.to_string();
    }
    let mut labels = labels.to_vec();
    labels.sort();
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{name}{{{}}}", inner.join(","))
}

fn parse_sample(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_string();
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        let mut chars = after.char_indices().peekable();
        loop {
            let (start, c) = *chars.peek()?;
            if c == '}' {
                rest = &after[start + 1..];
                break;
            }
            let eq = after[start..].find('=')? + start;
            let label = after[start..eq].trim_start_matches(',').to_string();
            while chars.next_if(|(i, _)| *i <= eq).is_some() {}
            chars.next_if(|(_, c)| *c == '"')?;
            let mut value = String::new();
            loop {
                match chars.next()? {
                    (_, '\\') => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    (_, '"') => break,
                    (_, c) => value.push(c),
                }
            }
            labels.push((label, value));
            chars.next_if(|(_, c)| *c == ',');
        }
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse().ok()?,
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

impl Gateway {
    /// Where this gateway serves `GET /metrics`: its own address when started with
    /// `metrics_listen`, else the API's.
    pub fn metrics_url(&self) -> String {
        match self.running.metrics_addr() {
            Some(address) => format!("http://{address}/metrics"),
            None => format!("{}/metrics", self.base),
        }
    }

    /// Scrapes `GET /metrics` as `curl` would (Prometheus text format 0.0.4).
    pub async fn scrape(&self) -> Scrape {
        let response = reqwest::get(self.metrics_url())
            .await
            .expect("the metrics are served");
        assert_eq!(response.status(), StatusCode::OK);
        let content_type = response.headers()["content-type"]
            .to_str()
            .expect("a content type")
            .to_string();
        assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{content_type}"
        );
        Scrape::parse(&response.text().await.expect("a text body"))
    }
}

#[test]
fn metrics_samples_parse_with_escaped_labels() {
    let scrape = Scrape::parse(
        "# TYPE x counter\nx_total{b=\"2\",a=\"q\\\"uo,te}\"} 3\ny 1.5\nh_bucket{le=\"+Inf\"} 4\n",
    );
    assert_eq!(
        scrape.metric("x_total", &[("a", "q\"uo,te}"), ("b", "2")]),
        3.0
    );
    assert_eq!(scrape.metric("y", &[]), 1.5);
    assert_eq!(scrape.find("h_bucket", &[("le", "+Inf")]), Some(4.0));
    assert_eq!(scrape.find("absent", &[]), None);
}
