//! `sealgate hold place|release|list`: legal holds (role `legal`).

use clap::Subcommand;

use super::{connect, Endpoint};
use crate::api::pb;
use pb::legal_hold_service_client::LegalHoldServiceClient;

#[derive(Debug, Subcommand)]
pub(super) enum HoldCommand {
    /// Places a case's hold on a user: their erasure fails LEGAL_HOLD until
    /// every case releases them.
    Place(CaseArgs),
    /// Releases a case's hold on a user.
    Release(CaseArgs),
    /// Lists holds: `pseudonym<TAB>case<TAB>placed_at_unix_ms<TAB>placed_by`
    /// per line.
    List(ListArgs),
}

#[derive(Debug, clap::Args)]
pub(super) struct CaseArgs {
    #[command(flatten)]
    endpoint: Endpoint,
    /// The held user's id.
    #[arg(long)]
    user: String,
    /// The case reference.
    #[arg(long = "case")]
    case_ref: String,
}

#[derive(Debug, clap::Args)]
pub(super) struct ListArgs {
    #[command(flatten)]
    endpoint: Endpoint,
    /// Only this user's holds.
    #[arg(long)]
    user: Option<String>,
}

fn line(h: &pb::LegalHold) -> String {
    format!(
        "{}\t{}\t{}\t{}",
        h.pseudonym, h.case_ref, h.placed_at_unix_ms, h.placed_by
    )
}

pub(super) async fn run(command: HoldCommand) -> anyhow::Result<()> {
    match command {
        HoldCommand::Place(a) => {
            let mut client = LegalHoldServiceClient::new(connect(&a.endpoint).await?);
            let hold = client
                .place_hold(pb::PlaceHoldRequest {
                    user_id: a.user,
                    case_ref: a.case_ref,
                })
                .await?
                .into_inner();
            println!("{}", line(&hold));
        }
        HoldCommand::Release(a) => {
            let mut client = LegalHoldServiceClient::new(connect(&a.endpoint).await?);
            let r = client
                .release_hold(pb::ReleaseHoldRequest {
                    user_id: a.user,
                    case_ref: a.case_ref,
                })
                .await?
                .into_inner();
            println!("released: {}", r.released);
        }
        HoldCommand::List(a) => {
            let mut client = LegalHoldServiceClient::new(connect(&a.endpoint).await?);
            let mut page_token = String::new();
            loop {
                let page = client
                    .list_holds(pb::ListHoldsRequest {
                        user_id: a.user.clone().unwrap_or_default(),
                        page_size: 0,
                        page_token,
                    })
                    .await?
                    .into_inner();
                for h in &page.holds {
                    println!("{}", line(h));
                }
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
        }
    }
    Ok(())
}
