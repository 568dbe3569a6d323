//! `sealgate ls`: lists a user's objects in a space, one `id<TAB>size<TAB>suite`
//! per line.

use super::{connect, Endpoint, UserSpace};
use crate::api::pb;
use pb::content_service_client::ContentServiceClient;

#[derive(Debug, clap::Args)]
pub(super) struct LsArgs {
    #[command(flatten)]
    endpoint: Endpoint,
    #[command(flatten)]
    at: UserSpace,
}

pub(super) async fn run(args: LsArgs) -> anyhow::Result<()> {
    let LsArgs {
        endpoint,
        at: UserSpace { user, space },
    } = args;
    let mut client = ContentServiceClient::new(connect(&endpoint).await?);
    let mut token = String::new();
    loop {
        let page = client
            .list_objects(pb::ListObjectsRequest {
                user_id: user.clone(),
                space: space.clone(),
                page_size: 1000,
                page_token: token,
            })
            .await?
            .into_inner();
        for o in page.objects {
            if o.damaged {
                println!("{}\tDAMAGED", o.object_id);
            } else {
                println!("{}\t{}\t{}", o.object_id, o.size, o.suite);
            }
        }
        if page.next_page_token.is_empty() {
            return Ok(());
        }
        token = page.next_page_token;
    }
}
