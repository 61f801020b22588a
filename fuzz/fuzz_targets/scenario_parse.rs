//! Scenario parsing: any text is accepted or refused with an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(e) = podnet_sim::scenario::parse("fuzz.yaml", text) {
            // Rendering the error walks its position and message too.
            let _ = e.to_string();
        }
    }
});
