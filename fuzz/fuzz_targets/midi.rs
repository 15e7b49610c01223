//! Standard MIDI file reading: never a panic; notes sorted, onset ≤ offset.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    sscnmf::fuzzing::midi(data);
});
