//! The Prometheus endpoint of a real server: where it listens, a scrape
//! over a socket, the samples of a scrape.

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

/// The value of the sample `name` whose labels are exactly `labels` in a
/// scrape's text; 0 when there is none (a counter never incremented).
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut want: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    want.sort();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (series_name, got) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if series_name != name {
            continue;
        }
        let mut got: Vec<String> = if got.is_empty() {
            Vec::new()
        } else {
            got.split(',').map(str::to_string).collect()
        };
        got.sort();
        if got == want {
            return value.parse().expect("a sample value");
        }
    }
    0.0
}
