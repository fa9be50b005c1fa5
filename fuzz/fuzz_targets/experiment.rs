//! Any text checked as an experiment file gives an experiment or located errors, and any
//! text expanded as a sweep (as is, and with `--folds` added) gives runs or an error: never
//! a panic. A checked experiment written out with every default parses back equal.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use segtop::experiment::{Experiment, sweep};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("experiments/fuzz.toml");
    let workspace = Path::new("/ws");
    match Experiment::parse(path, text, workspace) {
        Ok(experiment) => {
            let written = experiment.to_toml();
            let again = Experiment::parse(path, &written, workspace)
                .unwrap_or_else(|error| panic!("written back:\n{written}\ndoes not parse: {error}"));
            assert_eq!(again, experiment, "written back:\n{written}");
        }
        Err(error) => {
            let _ = error.to_string();
        }
    }
    if let Ok(Some(sweep)) = sweep::expand(path, text, workspace) {
        assert!((1..=sweep::MAX_RUNS).contains(&sweep.members.len()));
    }
    if let Ok(folded) = sweep::with_folds(path, text) {
        let _ = sweep::expand(path, &folded, workspace);
    }
});
