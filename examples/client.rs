//! One-off calls with `BlossomClient`: upload a file to every server, then
//! fetch it back, verified, from whichever server answers first in order.
//!
//! ```sh
//! BLOSSOM_SECRET_KEY=nsec1… cargo run --example client -- \
//!     https://a.example,https://b.example photo.jpg
//! ```

use std::sync::Arc;

use blossom_replicator::{BlossomClient, KeySigner, ServerUrl, Sha256, UploadSource};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: client <server,server,...> <file>";
    let servers = args.next().ok_or(usage)?;
    let file = args.next().ok_or(usage)?;
    let servers = servers.split(',').map(ServerUrl::parse).collect::<Result<Vec<_>, _>>()?;
    let signer = Arc::new(KeySigner::parse(&std::env::var("BLOSSOM_SECRET_KEY")?)?);
    let client = BlossomClient::new(signer, servers.clone());

    let mut hash = None;
    for (server, result) in client.upload_to_all(&UploadSource::Path(file.into())).await {
        match result {
            Ok(descriptor) => {
                println!("{server}: {}", descriptor.url.unwrap_or_default());
                hash = descriptor.sha256.and_then(|h| h.parse::<Sha256>().ok());
            }
            Err(e) => println!("{server}: {e}"),
        }
    }
    let hash = hash.ok_or("no server took the file")?;

    let mut bytes = Vec::new();
    let (server, len) = client.get_with_fallback(&hash, &servers, &mut bytes).await?;
    println!("fetched {len} bytes from {server}, hash checked");
    Ok(())
}
