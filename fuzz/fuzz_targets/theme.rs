//! Any text read as a theme file gives a theme or located errors: never a panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use segtop::theme::Theme;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Theme::parse(Path::new("themes/fuzz.toml"), text) {
        Ok(theme) => {
            let _ = theme.labels.palette();
        }
        Err(error) => {
            let _ = error.to_string();
        }
    }
});
