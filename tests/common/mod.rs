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

/// A piano-like tone at `rate` Hz: 8 harmonics of falling amplitude, 5 ms
/// attack, exponential decay (0.6 s), peak about 0.27.
#[allow(dead_code)] // not every test binary that includes this module uses it
pub fn tone(rate: u32, pitch: u8, seconds: f64) -> Vec<f32> {
    let f0 = 440.0 * 2f64.powf((f64::from(pitch) - 69.0) / 12.0);
    let n = (seconds * f64::from(rate)) as usize;
    (0..n)
        .map(|i| {
            let t = i as f64 / f64::from(rate);
            let env = (t / 0.005).min(1.0) * (-t / 0.6).exp();
            let s: f64 = (1..=8).map(|h| (2.0 * std::f64::consts::PI * f0 * h as f64 * t).sin() / h as f64).sum();
            (0.1 * env * s) as f32
        })
        .collect()
}
