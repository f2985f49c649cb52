//! The blocking client, for programs without an async runtime: check which
//! servers hold a blob.
//!
//! ```sh
//! cargo run --example blocking -- https://a.example,https://b.example <sha256>
//! ```

use std::sync::Arc;

use blossom_replicator::blocking::BlossomClient;
use blossom_replicator::{KeySigner, ServerUrl, Sha256};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: blocking <server,server,...> <sha256>";
    let servers = args.next().ok_or(usage)?;
    let hash: Sha256 = args.next().ok_or(usage)?.parse()?;
    let servers = servers.split(',').map(ServerUrl::parse).collect::<Result<Vec<_>, _>>()?;
    // Reading needs no identity of ours; a fresh key signs if a server asks.
    let client = BlossomClient::new(Arc::new(KeySigner::generate()), servers)?;
    for server in client.servers() {
        match client.has(server, &hash) {
            Ok(true) => println!("{server}: present"),
            Ok(false) => println!("{server}: absent"),
            Err(e) => println!("{server}: {e}"),
        }
    }
    Ok(())
}
