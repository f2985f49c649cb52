//! Input files with bytes no server has seen: every blob of every run is
//! new, so no run benefits from an earlier one's uploads.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use blossom_replicator::LocalBlob;

/// Distinct seeds across the whole run.
static NEXT_SEED: AtomicU64 = AtomicU64::new(0);

/// Bytes from a fast generator (splitmix64), distinct per call. They need
/// to be unique, not unpredictable.
pub(crate) fn unique_bytes(len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    fill_unique(&mut bytes);
    bytes
}

fn fill_unique(bytes: &mut [u8]) {
    let clock = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos();
    let mut state = (clock as u64) ^ NEXT_SEED.fetch_add(1, Ordering::Relaxed).rotate_left(32);
    for word in bytes.chunks_mut(8) {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        word.copy_from_slice(&z.to_le_bytes()[..word.len()]);
    }
}

/// Writes `count` files of `size` unique bytes into a new folder `dir`.
pub(crate) fn write_files(dir: &Path, count: usize, size: usize) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).expect("data dir");
    (0..count)
        .map(|i| {
            let path = dir.join(format!("blob-{i:06}.bin"));
            std::fs::write(&path, unique_bytes(size)).expect("write data file");
            path
        })
        .collect()
}

/// Writes one file of `size` unique bytes, a megabyte at a time.
pub(crate) fn write_large_file(path: &Path, size: u64) -> PathBuf {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
    let mut block = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        fill_unique(&mut block[..n]);
        file.write_all(&block[..n]).expect("write");
        left -= n as u64;
    }
    file.flush().expect("flush");
    path.to_owned()
}

/// Hashes files as the CLI does before queueing them.
pub(crate) async fn hash_all(paths: Vec<PathBuf>) -> Vec<LocalBlob> {
    tokio::task::spawn_blocking(move || {
        paths.iter().map(|p| LocalBlob::from_path(p).expect("hash input")).collect()
    })
    .await
    .expect("hashing task")
}
