//! The `backworks.lock` parser (`lockfile::LockFile::parse`) on arbitrary
//! text. Beyond "no panic": a lock file that parses is stable (its text as
//! it would be written parses to the same entries), and writing survives
//! reading: every entry upserted into a new lock file, and again into the
//! parsed one (which keeps the user's formatting), reads back as the same
//! entries; removing a plugin removes exactly its entries.
#![no_main]

use std::path::Path;

use backworks_host::lockfile::LockFile;
use libfuzzer_sys::fuzz_target;

fn reparse(lock: &LockFile) -> LockFile {
    let text = lock.to_text();
    LockFile::parse(&text, lock.path())
        .unwrap_or_else(|e| panic!("a lock file as written does not parse: {e}\n{text}"))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("fuzz/backworks.lock");
    let mut lock = match LockFile::parse(text, path) {
        Ok(lock) => lock,
        Err(error) => {
            assert!(error.to_string().contains("backworks.lock"), "{error}");
            return;
        }
    };
    let entries = lock.entries().to_vec();
    assert_eq!(reparse(&lock).entries(), entries, "stable");

    let mut fresh = LockFile::parse("", path).expect("an empty lock file");
    for entry in &entries {
        fresh.upsert(entry.clone());
    }
    assert_eq!(reparse(&fresh).entries(), entries, "written, then read");

    for entry in &entries {
        lock.upsert(entry.clone());
    }
    assert_eq!(
        reparse(&lock).entries(),
        entries,
        "upserted in place, then read"
    );

    if let Some(first) = entries.first() {
        let removed = lock.remove(&first.name);
        assert!(removed.iter().all(|e| e.name == first.name));
        let kept: Vec<_> = entries
            .iter()
            .filter(|e| e.name != first.name)
            .cloned()
            .collect();
        assert_eq!(reparse(&lock).entries(), kept, "removed, then read");
    }
});
