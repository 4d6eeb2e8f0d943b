//! umsd's `/metrics` (Prometheus text format): fetching it and reading the few series the
//! delivery scenarios sample (calls in flight, outcomes, status-write batch sizes, …).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

/// One sample line: `name{label="value",…} value`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Series {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Every sample of a scrape, in order.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Scrape {
    pub series: Vec<Series>,
}

impl Scrape {
    /// Parses the text format; comments, blank lines and lines that do not parse are
    /// skipped.
    pub fn parse(text: &str) -> Scrape {
        let series = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter_map(parse_line)
            .collect();
        Scrape { series }
    }

    /// Sum of every series named `name` whose labels include all of `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).map(|s| s.value).sum()
    }

    /// Series named `name` with all of `labels`.
    pub fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Series> + 'a {
        self.series.iter().filter(move |s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).is_some_and(|x| x == v))
        })
    }

    /// `sum / count` of a histogram or summary (`<name>_sum`, `<name>_count`) over the
    /// series with all of `labels`; `None` without observations.
    pub fn mean(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let count = self.sum(&format!("{name}_count"), labels);
        (count > 0.0).then(|| self.sum(&format!("{name}_sum"), labels) / count)
    }

    /// The series whose name starts with one of `prefixes`, as `name{labels}` → value.
    pub fn select(&self, prefixes: &[&str]) -> BTreeMap<String, f64> {
        self.series
            .iter()
            .filter(|s| prefixes.iter().any(|p| s.name.starts_with(p)))
            .map(|s| (s.key(), s.value))
            .collect()
    }
}

impl Series {
    /// `name{k="v",…}` (labels sorted).
    pub fn key(&self) -> String {
        if self.labels.is_empty() {
            return self.name.clone();
        }
        let labels: Vec<String> = self
            .labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{v}\""))
            .collect();
        format!("{}{{{}}}", self.name, labels.join(","))
    }
}

fn parse_line(line: &str) -> Option<Series> {
    let (name, labels, rest) = match line.find('{') {
        Some(open) => {
            let close = open + line[open..].find('}')?;
            (
                &line[..open],
                parse_labels(&line[open + 1..close])?,
                &line[close + 1..],
            )
        }
        None => {
            let sp = line.find(char::is_whitespace)?;
            (&line[..sp], BTreeMap::new(), &line[sp..])
        }
    };
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Series {
        name: name.trim().to_owned(),
        labels,
        value,
    })
}

fn parse_labels(text: &str) -> Option<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let eq = rest.find('=')?;
        let key = rest[..eq].trim().to_owned();
        let after = rest[eq + 1..].trim_start().strip_prefix('"')?;
        // the value runs to the next unescaped quote
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        value.push(match n {
                            'n' => '\n',
                            other => other,
                        });
                    }
                }
                '"' => {
                    end = Some(i);
                    break;
                }
                c => value.push(c),
            }
        }
        let end = end?;
        out.insert(key, value);
        rest = after[end + 1..].trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    Some(out)
}

/// Fetches `<base>/metrics`.
pub async fn scrape(client: &reqwest::Client, base_url: &str) -> Result<Scrape> {
    let text = client
        .get(format!("{base_url}/metrics"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .context("GET /metrics")?
        .error_for_status()
        .context("GET /metrics")?
        .text()
        .await
        .context("reading /metrics")?;
    Ok(Scrape::parse(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP umsd_channel_in_flight provider calls in flight
# TYPE umsd_channel_in_flight gauge
umsd_channel_in_flight{channel="hook"} 31
umsd_channel_in_flight{channel="wecom"} 2
umsd_delivery_outcomes_total{channel="hook",type="webhook",outcome="delivered"} 5000
umsd_delivery_outcomes_total{channel="wecom",type="wecom",outcome="delivered"} 1000
umsd_delivery_outcomes_total{channel="hook",type="webhook",outcome="retryable"} 3
umsd_status_batch_size_sum 12000
umsd_status_batch_size_count 40
umsd_accept_to_submit_seconds_bucket{channel="hook",le="+Inf"} 5000
umsd_odd{path="a \"quoted\", b"} 1.5e3

garbage line
"#;

    #[test]
    fn parses_and_sums() {
        let s = Scrape::parse(TEXT);
        assert_eq!(s.sum("umsd_channel_in_flight", &[]), 33.0);
        assert_eq!(
            s.sum("umsd_channel_in_flight", &[("channel", "hook")]),
            31.0
        );
        assert_eq!(
            s.sum("umsd_delivery_outcomes_total", &[("outcome", "delivered")]),
            6000.0
        );
        assert_eq!(s.mean("umsd_status_batch_size", &[]), Some(300.0));
        assert_eq!(s.mean("umsd_nothing", &[]), None);
        let inf = s.sum("umsd_accept_to_submit_seconds_bucket", &[("le", "+Inf")]);
        assert_eq!(inf, 5000.0);
        let odd = s.matching("umsd_odd", &[]).next().unwrap();
        assert_eq!(odd.labels["path"], "a \"quoted\", b");
        assert_eq!(odd.value, 1500.0);
        let sel = s.select(&["umsd_status_batch_size"]);
        assert_eq!(sel.len(), 2);
        assert_eq!(sel["umsd_status_batch_size_count"], 40.0);
        assert_eq!(
            s.series[0].key(),
            "umsd_channel_in_flight{channel=\"hook\"}"
        );
    }
}
