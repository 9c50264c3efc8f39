//! Every input a fuzz target once crashed on (fuzz/regressions/<target>/), run through its
//! target again: each must now be handled without a panic. The focused unit test of each bug
//! is in the crate that had it; this keeps the exact bytes.

use std::path::Path;

fn replay(folder: &str, target: &str, run: Target) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(folder)
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return 0;
    };
    let mut count = 0;
    for entry in entries {
        let path = entry.expect("an input").path();
        eprintln!("{target}: {}", path.display());
        run(&std::fs::read(&path).expect("read an input"));
        count += 1;
    }
    count
}

type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 6] = [
    ("binlog_stream", headwater_fuzz::binlog_stream),
    ("binlog_rows", headwater_fuzz::binlog_rows),
    ("pgoutput_stream", headwater_fuzz::pgoutput_stream),
    ("pg_protocol", headwater_fuzz::pg_protocol),
    ("pg_copy_rows", headwater_fuzz::pg_copy_rows),
    ("source_config", headwater_fuzz::source_config),
];

#[test]
fn crashes_found_by_fuzzing_stay_fixed() {
    for (target, run) in TARGETS {
        replay("regressions", target, run);
    }
}

/// The seeds are real traffic: each is read without a panic, and every target has some.
#[test]
fn every_seed_is_read() {
    for (target, run) in TARGETS {
        assert!(
            replay("seeds", target, run) > 0,
            "no seeds for {target}: run fuzz/seeds.py"
        );
    }
}
