//! MAPS txt, CSV and JSON note lists: never a panic; notes sorted and valid.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    sscnmf::fuzzing::note_text(data);
});
