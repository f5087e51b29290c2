//! A `file` task replaces its file atomically: killing `slice apply` at any moment leaves the old
//! contents or the new ones, never a mix, a truncated file or no file.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Slice;

/// Size of each version of the file. Large enough that writing it takes a while.
const SIZE: usize = 32 << 20;
const ITERATIONS: usize = 20;

/// `size` bytes of `line` repeated (the last copy cut short to fit).
fn repeated(line: &str, size: usize) -> Vec<u8> {
    line.as_bytes().iter().copied().cycle().take(size).collect()
}

/// Temporary files a write left behind in `dir`.
fn leftovers(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".slice-tmp"))
        .collect()
}

/// Where the first byte differs, to say what went wrong.
fn describe(have: &[u8], old: &[u8], new: &[u8]) -> String {
    let first_diff = |other: &[u8]| {
        have.iter()
            .zip(other)
            .position(|(a, b)| a != b)
            .unwrap_or(have.len().min(other.len()))
    };
    format!(
        "{} bytes; differs from old at byte {} (old has {}), from new at byte {} (new has {})",
        have.len(),
        first_diff(old),
        old.len(),
        first_diff(new),
        new.len()
    )
}

#[test]
fn killed_apply_leaves_old_or_new_contents() {
    let s = Slice::new();
    let old = repeated("old contents, one line of many: 0123456789\n", SIZE);
    // A different length too, so that a truncated or padded file cannot pass for either.
    let new = repeated(
        "NEW CONTENTS, a longer line of many: abcdefghijklmnop\n",
        SIZE + 4096,
    );
    s.write("new.txt", &new);
    // `sensitive` reports digests instead of a 32 MiB diff.
    s.write(
        "big.yml",
        "tasks:\n  - name: big file\n    file: { path: /srv/big, source: new.txt, sensitive: true }\n",
    );
    let dir = s.root().join("srv");
    fs::create_dir(&dir).unwrap();
    let target = dir.join("big");

    let apply = || {
        Command::new(env!("CARGO_BIN_EXE_slice"))
            .args(["apply", "big.yml", "--root"])
            .arg(s.root())
            .current_dir(s.path())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };

    // One whole run, watching for the temporary file to time the write within it.
    fs::write(&target, &old).unwrap();
    let start = Instant::now();
    let mut child = apply();
    let (mut tmp_seen, mut tmp_gone) = (None, None);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        let present = !leftovers(&dir).is_empty();
        if present && tmp_seen.is_none() {
            tmp_seen = Some(start.elapsed());
        }
        if !present && tmp_seen.is_some() && tmp_gone.is_none() {
            tmp_gone = Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_micros(500));
    };
    let total = start.elapsed();
    assert!(status.success(), "the uninterrupted apply failed: {status}");
    assert!(
        fs::read(&target).unwrap() == new,
        "the uninterrupted apply did not write the file"
    );
    assert!(leftovers(&dir).is_empty());
    let write_start = tmp_seen.unwrap_or(Duration::ZERO);
    let write_end = tmp_gone.unwrap_or(total);
    eprintln!("whole apply: {total:?}; temporary file from {tmp_seen:?} to {tmp_gone:?}");

    // A third of the kills spread over the whole run, the rest over the write itself (with a
    // margin either side, as runs differ).
    let mut delays = Vec::new();
    let spread = ITERATIONS / 3;
    for i in 0..spread {
        delays.push(total.mul_f64(i as f64 / spread as f64));
    }
    let from = write_start.mul_f64(0.9);
    let to = write_end.mul_f64(1.1).min(total);
    let rest = ITERATIONS - spread;
    for i in 0..rest {
        delays.push(from + (to.saturating_sub(from)).mul_f64(i as f64 / (rest - 1) as f64));
    }

    let (mut kept_old, mut got_new, mut finished_first, mut left) = (0, 0, 0, 0);
    for delay in &delays {
        fs::write(&target, &old).unwrap();
        let mut child = apply();
        std::thread::sleep(*delay);
        // SIGKILL; an error only means it has already exited.
        let _ = child.kill();
        let status = child.wait().unwrap();
        if status.success() {
            finished_first += 1;
        }
        let have = fs::read(&target).unwrap();
        if have == old {
            kept_old += 1;
        } else if have == new {
            got_new += 1;
        } else {
            panic!(
                "killed after {delay:?} ({status}): the file is neither old nor new: {}",
                describe(&have, &old, &new)
            );
        }
        let tmp = leftovers(&dir);
        eprintln!(
            "  killed after {delay:?}: {status}, {} contents, {} temporary file(s)",
            if have == new { "new" } else { "old" },
            tmp.len()
        );
        left += tmp.len();
        for name in tmp {
            fs::remove_file(dir.join(name)).unwrap();
        }
    }
    eprintln!(
        "{} kills: {kept_old} left the old contents, {got_new} the new ones \
         ({finished_first} of those runs had finished before the kill); \
         {left} temporary files were left behind",
        delays.len()
    );
    assert_eq!(kept_old + got_new, delays.len());
}
