//! Helpers shared by the integration tests.

use std::path::Path;

/// Writes mono `samples` (in -1..1) as a 16-bit WAV file at `rate` Hz.
pub fn write_wav(path: &Path, rate: u32, samples: &[f32]) {
    let spec =
        hound::WavSpec { channels: 1, sample_rate: rate, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for &s in samples {
        w.write_sample((s * 32767.0).round() as i16).unwrap();
    }
    w.finalize().unwrap();
}
