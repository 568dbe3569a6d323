//! `sealgate audit [--user U] [--since TIME]` pages through the audit trail
//! (role `ops`): `id<TAB>time<TAB>principal<TAB>action<TAB>pseudonym<TAB>
//! outcome<TAB>detail` per record (`-` for no user). `sealgate audit verify`
//! checks the hash chain: exit 0 and `intact: N records`, or exit 1 naming
//! the first broken record.

use anyhow::Context;
use clap::Subcommand;

use super::{connect, Endpoint};
use crate::api::pb;
use crate::clock::{days_from_civil, format_time};
use pb::audit_service_client::AuditServiceClient;

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(super) struct AuditArgs {
    #[command(subcommand)]
    command: Option<AuditCommand>,
    #[command(flatten)]
    endpoint: Endpoint,
    /// Only this user's records.
    #[arg(long)]
    user: Option<String>,
    /// Only records at or after TIME: RFC 3339 in UTC
    /// (`2026-11-29T10:00:00Z`) or Unix milliseconds.
    #[arg(long, value_parser = parse_time)]
    since: Option<i64>,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Checks the hash chain and names the first broken record.
    Verify {
        #[command(flatten)]
        endpoint: Endpoint,
    },
}

pub(super) async fn run(args: AuditArgs) -> anyhow::Result<()> {
    if let Some(AuditCommand::Verify { endpoint }) = args.command {
        let mut client = AuditServiceClient::new(connect(&endpoint).await?);
        let v = client
            .verify_audit(pb::VerifyAuditRequest {})
            .await?
            .into_inner();
        if v.intact {
            println!("intact: {} records", v.records);
            return Ok(());
        }
        anyhow::bail!(
            "audit trail broken at record {}: {}",
            v.first_broken_id,
            v.problem
        );
    }
    let mut client = AuditServiceClient::new(connect(&args.endpoint).await?);
    let mut page_token = String::new();
    loop {
        let page = client
            .list_audit(pb::ListAuditRequest {
                user_id: args.user.clone().unwrap_or_default(),
                since_unix_ms: args.since,
                page_size: 0,
                page_token,
            })
            .await?
            .into_inner();
        for r in &page.records {
            println!(
                "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                r.id,
                format_time(r.at_unix_ms),
                r.principal,
                r.action,
                if r.pseudonym.is_empty() {
                    "-"
                } else {
                    &r.pseudonym
                },
                r.outcome,
                r.detail
            );
        }
        if page.next_page_token.is_empty() {
            return Ok(());
        }
        page_token = page.next_page_token;
    }
}

/// `--since`: Unix milliseconds, or `YYYY-MM-DDTHH:MM:SS[.fff]Z`.
fn parse_time(text: &str) -> anyhow::Result<i64> {
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    let bad = || format!("{text:?} is neither Unix milliseconds nor YYYY-MM-DDTHH:MM:SSZ");
    let rest = text.strip_suffix('Z').with_context(bad)?;
    let (date, time) = rest.split_once('T').with_context(bad)?;
    let num = |s: &str| s.parse::<i64>().ok();
    let date: Vec<i64> = date.split('-').filter_map(num).collect();
    let (time, millis) = time.split_once('.').unwrap_or((time, "0"));
    let time: Vec<i64> = time.split(':').filter_map(num).collect();
    let millis = format!("{millis:0<3}")[..3]
        .parse::<i64>()
        .ok()
        .with_context(bad)?;
    match (date.as_slice(), time.as_slice()) {
        ([y, mo @ 1..=12, d @ 1..=31], [h @ 0..=23, mi @ 0..=59, s @ 0..=60]) => {
            Ok((days_from_civil(*y, *mo, *d) * 86_400 + h * 3600 + mi * 60 + s) * 1000 + millis)
        }
        _ => Err(anyhow::anyhow!(bad())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip() {
        assert_eq!(parse_time("1970-01-01T00:00:00Z").unwrap(), 0);
        assert_eq!(
            parse_time("2026-11-29T10:00:00Z").unwrap(),
            1_795_946_400_000
        );
        assert_eq!(
            parse_time("2000-02-29T23:59:59.5Z").unwrap(),
            951_868_799_500
        );
        assert_eq!(parse_time("12345").unwrap(), 12345);
        for t in [0, 951_868_799_500, 1_796_032_800_123] {
            assert_eq!(parse_time(&format_time(t)).unwrap(), t);
        }
        assert_eq!(format_time(951_868_799_500), "2000-02-29T23:59:59.500Z");
        for bad in ["yesterday", "2026-13-01T00:00:00Z", "2026-11-29 10:00:00"] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }
}
