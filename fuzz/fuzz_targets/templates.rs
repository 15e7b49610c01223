//! The template dictionary and attack/decay model files: never a panic;
//! an accepted dictionary is valid (finite, non-negative, shapes agree).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    sscnmf::fuzzing::templates(data);
});
