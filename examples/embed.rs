//! The engine inside a long-running tokio service: start it once, queue
//! files as they come, listen to its events, stop it cleanly on Ctrl-C.
//!
//! ```sh
//! BLOSSOM_SECRET_KEY=nsec1… cargo run --example embed -- \
//!     https://a.example,https://b.example replicator.db photo.jpg notes.txt
//! ```

use std::sync::Arc;

use blossom_replicator::{Config, Event, KeySigner, LocalBlob, Replicator, ServerUrl};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: embed <server,server,...> <database> <file>...";
    let servers = args.next().ok_or(usage)?;
    let database = args.next().ok_or(usage)?;
    let servers = servers.split(',').map(ServerUrl::parse).collect::<Result<Vec<_>, _>>()?;
    let signer = Arc::new(KeySigner::parse(&std::env::var("BLOSSOM_SECRET_KEY")?)?);

    let replicator = Replicator::start(Config::new(database.into(), servers), signer).await?;

    // Events are a broadcast: any number of listeners, none can block the
    // engine. This one logs and would update a web UI or metrics.
    let mut events = replicator.subscribe();
    let listener = tokio::spawn(async move {
        while let Ok(event) = events.recv().await {
            match event {
                Event::ReplicaStored { sha256, server, method, .. } => {
                    println!("{sha256} on {server} ({})", method.as_str());
                }
                Event::ReplicaFailed { sha256, server, reason, .. } => {
                    println!("{sha256} failed on {server}: {reason}");
                }
                Event::ServerPaused { server, reason, .. } => {
                    println!("{server} paused: {reason}");
                }
                Event::BlobSettled { sha256, stored, failed } => {
                    println!("{sha256} settled: {stored} stored, {failed} failed");
                }
                _ => {}
            }
        }
    });

    // Hashing reads files: off the async threads.
    let files: Vec<String> = args.collect();
    let blobs = tokio::task::spawn_blocking(move || {
        files.iter().map(|f| LocalBlob::from_path(f.as_ref())).collect::<Result<Vec<_>, _>>()
    })
    .await??;
    replicator.enqueue(blobs).await?;

    // A service would keep running and enqueue more; here we stop when the
    // work is done or on Ctrl-C, leaving what is unfinished queued.
    tokio::select! {
        result = replicator.wait_idle() => result?,
        _ = tokio::signal::ctrl_c() => println!("stopping; unfinished work stays queued"),
    }
    replicator.shutdown().await;
    listener.await?;
    Ok(())
}
