//! Fuzzes the layer applier (the import path): any bytes as a layer tar must either be refused
//! or stay inside the layer's root. `cagette::fuzz_apply_layer` panics on an escape.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let scratch = std::env::temp_dir().join(format!("cagette-fuzz-{}", std::process::id()));
    let _ = cagette::fuzz_apply_layer(&scratch, data);
});
