//! The Prometheus endpoint of a real server: where it listens, a scrape
//! over a socket, the samples of a scrape.

use std::collections::BTreeMap;
use std::net::SocketAddr;

/// The address of the metrics endpoint, from the line of a server's log
/// (text or JSON) that says it listens.
pub fn metrics_address(log: &str) -> Option<SocketAddr> {
    let line = log
        .lines()
        .find(|l| l.contains("metrics endpoint listening"))?;
    let (_, rest) = line.split_once("address")?;
    let rest = rest.trim_start_matches(['=', '"', ':']);
    let end = rest
        .find(|c: char| !(c.is_ascii_hexdigit() || matches!(c, '.' | ':' | '[' | ']')))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// `GET /metrics` from `address`: the response's status line and body.
pub async fn scrape(address: SocketAddr) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect to the metrics endpoint");
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    tcp.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8(response).expect("a UTF-8 scrape");
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    (head.to_string(), body.to_string())
}

/// The labels of a series, by name.
pub type Labels = BTreeMap<String, String>;

/// Every series named `name` in a scrape's text, with its labels and
/// value, in the order of the text; none when the scrape has none (the
/// encoder leaves out a family without series, so an empty family and a
/// misspelled name look alike here: [`value`] tells them apart).
pub fn series(text: &str, name: &str) -> Vec<(Labels, f64)> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (series_name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if series_name != name {
            continue;
        }
        let labels = labels
            .split(',')
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (k, v) = l.split_once('=').expect("label=\"value\"");
                (k.to_string(), v.trim_matches('"').to_string())
            })
            .collect();
        out.push((labels, value.parse().expect("a sample value")));
    }
    out
}

/// The value of the series `name{labels}` (exactly those labels), or
/// `None` when the scrape has no such series: a labelled counter that was
/// never incremented has none.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: Labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    series(text, name)
        .into_iter()
        .find(|(got, _)| *got == want)
        .map(|(_, v)| v)
}

/// The value of the series `name{labels}`, which must be in the scrape.
///
/// # Panics
/// When it is not, naming it and listing the series of `name` there are
/// (a misspelled label shows beside the right one), or if there are none,
/// the metric families the scrape declares (a misspelled name shows
/// beside the right one).
#[track_caller]
pub fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    sample(text, name, labels).unwrap_or_else(|| {
        let there: Vec<String> = series(text, name)
            .into_iter()
            .map(|(labels, v)| format!("{labels:?} {v}"))
            .collect();
        if there.is_empty() {
            let families: Vec<&str> = text
                .lines()
                .filter_map(|l| l.strip_prefix("# TYPE "))
                .collect();
            panic!("no series {name} in the scrape; its metric families: {families:?}");
        }
        panic!(
            "no series {name}{labels:?} in the scrape; the series of {name}:\n{}",
            there.join("\n")
        )
    })
}
