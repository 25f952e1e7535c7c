#![no_main]
//! Type detection, then CSV / text extraction of whatever it detects.

use std::time::Duration;

use confab_extract::detect::{Detected, detect};
use confab_extract::extract::{Limits, extract};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::new(Duration::from_secs(5));
    for name in ["data.csv", "notes.txt", "README.md"] {
        if let Ok(d @ (Detected::Csv(_) | Detected::Text(_))) = detect(data, name) {
            let _ = extract(d, data, &limits);
        }
    }
    let _ = extract(Detected::Csv(b','), data, &limits);
});
