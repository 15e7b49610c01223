//! Audio decoding (WAV, FLAC, AIFF, MP3, Ogg) of arbitrary bytes: never a
//! panic, never an unbounded allocation; decoded samples are finite.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    sscnmf::fuzzing::decode(data);
});
