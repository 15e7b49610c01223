//! Resampling: frequency, phase (time alignment), gain, anti-aliasing, length.

use std::f64::consts::PI;

use sscnmf::audio::{decode_bytes, load_audio, resample, DecodeOptions};

/// `amp · sin(2π f (t − t0))` for `t0 ≤ t < t1`, else 0, sampled at `rate`.
fn burst(freq: f64, rate: u32, seconds: f64, t0: f64, t1: f64) -> Vec<f32> {
    let n = (seconds * f64::from(rate)).round() as usize;
    (0..n)
        .map(|i| {
            let t = i as f64 / f64::from(rate);
            if t >= t0 && t < t1 {
                (0.8 * (2.0 * PI * freq * (t - t0)).sin()) as f32
            } else {
                0.0
            }
        })
        .collect()
}

fn sine(freq: f64, rate: u32, seconds: f64) -> Vec<f32> {
    burst(freq, rate, seconds, 0.0, f64::INFINITY)
}

/// Largest |a − b| over samples whose time lies in [from, to] seconds.
fn max_error(a: &[f32], b: &[f32], rate: u32, from: f64, to: f64) -> f64 {
    let r = f64::from(rate);
    let (i0, i1) = ((from * r) as usize, ((to * r) as usize).min(a.len()).min(b.len()));
    (i0..i1).map(|i| (f64::from(a[i]) - f64::from(b[i])).abs()).fold(0.0, f64::max)
}

fn rms(x: &[f32]) -> f64 {
    (x.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / x.len() as f64).sqrt()
}

/// Frequency from interpolated rising zero crossings.
fn frequency(x: &[f32], rate: u32) -> f64 {
    let mut crossings = Vec::new();
    for i in x.len() / 10..x.len() * 9 / 10 {
        let (y0, y1) = (f64::from(x[i]), f64::from(x[i + 1]));
        if y0 < 0.0 && y1 >= 0.0 {
            crossings.push(i as f64 + y0 / (y0 - y1));
        }
    }
    (crossings.len() - 1) as f64 / ((crossings[crossings.len() - 1] - crossings[0]) / f64::from(rate))
}

/// First time (s) at which |x| exceeds `threshold`.
fn onset(x: &[f32], rate: u32, threshold: f32) -> f64 {
    x.iter().position(|v| v.abs() > threshold).expect("no onset") as f64 / f64::from(rate)
}

#[test]
fn sine_keeps_its_frequency_and_phase() {
    for from in [8000u32, 22050, 48000, 96000] {
        let x = sine(1000.0, from, 1.0);
        let y = resample(&x, from, 44100).unwrap();
        assert_eq!(y.len(), 44100, "{from} Hz");
        let f = frequency(&y, 44100);
        assert!((f - 1000.0).abs() < 0.01, "{from} Hz → 44.1 kHz: {f} Hz");
        // Sample by sample equal to the sine sampled at 44.1 kHz, away from
        // the edges (where the input starts and stops abruptly): same
        // frequency, same phase, gain 1. A shift of a single output sample
        // would give an error of ~0.11.
        let ideal = sine(1000.0, 44100, 1.0);
        let err = max_error(&y, &ideal, 44100, 0.05, 0.95);
        println!("{from} Hz → 44.1 kHz: {f:.5} Hz, max error {err:e}");
        assert!(err < 1e-4, "{from} Hz → 44.1 kHz: max error {err}");
    }
}

#[test]
fn burst_onset_stays_in_place() {
    for from in [48000u32, 22050] {
        let (t0, t1) = (0.1, 0.3);
        let x = burst(1000.0, from, 0.5, t0, t1);
        let y = resample(&x, from, 44100).unwrap();
        let ideal = burst(1000.0, 44100, 0.5, t0, t1);
        let (got, want) = (onset(&y, 44100, 0.4), onset(&ideal, 44100, 0.4));
        println!("{from} Hz: onset {got} s vs {want} s");
        assert!((got - want).abs() < 1e-3, "{from} Hz: onset at {got} s, expected {want} s");
        assert!((got - want).abs() <= 1.0 / 44100.0, "{from} Hz: onset at {got} s, expected {want} s");
        // Inside the burst, away from its edges, it is the ideal burst.
        let err = max_error(&y, &ideal, 44100, t0 + 0.01, t1 - 0.01);
        assert!(err < 5e-4, "{from} Hz: max error {err}");
        // And before the onset, only the filter's (small) pre-ringing.
        let before = max_error(&y, &ideal, 44100, 0.0, t0 - 0.005);
        println!("{from} Hz: burst error {err:e}, before onset {before:e}");
        assert!(before < 1e-3, "{from} Hz: {before} before the onset");
    }
}

#[test]
fn downsampling_removes_what_would_alias() {
    // 10 kHz is above the 8 kHz Nyquist frequency of 16 kHz: it must vanish,
    // not fold back to 6 kHz.
    let x = sine(10000.0, 44100, 1.0);
    let y = resample(&x, 44100, 16000).unwrap();
    assert_eq!(y.len(), 16000);
    let r = rms(&y[1600..14400]) / rms(&x);
    println!("10 kHz after 44.1 → 16 kHz: relative level {r:e}");
    assert!(r < 1e-3, "relative level {r}");
    // While 3 kHz passes untouched.
    let x = sine(3000.0, 44100, 1.0);
    let y = resample(&x, 44100, 16000).unwrap();
    let err = max_error(&y, &sine(3000.0, 16000, 1.0), 16000, 0.05, 0.95);
    assert!(err < 2e-3, "max error {err}");
}

#[test]
fn constant_keeps_its_level() {
    let x = vec![0.25f32; 48000];
    let y = resample(&x, 48000, 44100).unwrap();
    let err = y[2205..41895].iter().map(|&v| (f64::from(v) - 0.25).abs()).fold(0.0, f64::max);
    assert!(err < 1e-4, "{err}");
}

#[test]
fn load_audio_resamples_to_the_target_rate() {
    let x = sine(1000.0, 48000, 0.5);
    let data: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut wav = Vec::new();
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&3u16.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes());
    wav.extend_from_slice(&48000u32.to_le_bytes());
    wav.extend_from_slice(&(48000u32 * 4).to_le_bytes());
    wav.extend_from_slice(&4u16.to_le_bytes());
    wav.extend_from_slice(&32u16.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&(data.len() as u32).to_le_bytes());
    wav.extend_from_slice(&data);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sine1000-32bit-float-48000Hz-mono.wav");
    std::fs::write(&path, &wav).unwrap();

    let a = load_audio(&path, &DecodeOptions::default(), 44100).unwrap();
    assert_eq!((a.sample_rate, a.source_sample_rate, a.samples.len()), (44100, 48000, 22050));
    let err = max_error(&a.samples, &sine(1000.0, 44100, 0.5), 44100, 0.05, 0.45);
    assert!(err < 2e-3, "{err}");
    // decode_bytes does not resample.
    let b = decode_bytes(wav, Some("wav"), &DecodeOptions::default()).unwrap();
    assert_eq!((b.sample_rate, b.samples.len()), (48000, 24000));
}

#[test]
fn unusual_rates_work() {
    for (from, to) in [(44101u32, 44100u32), (11025, 44100), (44100, 8000), (7919, 44100)] {
        let x = sine(500.0, from, 0.5);
        let y = resample(&x, from, to).unwrap();
        assert_eq!(y.len(), ((x.len() as u64 * u64::from(to)) as f64 / f64::from(from)).round() as usize);
        let err = max_error(&y, &sine(500.0, to, 0.5), to, 0.05, 0.45);
        println!("{from} → {to}: max error {err:e}");
        assert!(err < 5e-4, "{from} → {to}: {err}");
    }
}
