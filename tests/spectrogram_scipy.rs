//! The magnitude STFT against values computed independently with
//! `scipy.signal.stft` (see `tests/fixtures/stft_scipy_reference.py`, which
//! wrote the committed JSON fixture; scipy is not needed to run this test).

use sscnmf::spectrogram::{Stft, StftConfig};

/// The generator's signal, sample for sample (see the Python script).
fn reference_signal(n_samples: usize) -> (Vec<f32>, Vec<i64>) {
    let fs = 44100.0f64;
    let pi = std::f64::consts::PI;
    let mut q = Vec::with_capacity(n_samples);
    for n in 0..n_samples {
        let nf = n as f64;
        let mut x = 0.4 * (2.0 * pi * 440.0 * nf / fs).sin();
        if n >= 13230 {
            x += 0.3 * (2.0 * pi * 1234.5 * nf / fs + 0.7).sin();
        }
        x += 0.05 * (2.0 * pi * 7000.25 * nf / fs).sin();
        let v = 32767.0 * x;
        let r = (v.abs() + 0.5).floor() as i64;
        q.push(if v >= 0.0 { r } else { -r });
    }
    let samples = q.iter().map(|&v| (v as f64 / 32768.0) as f32).collect();
    (samples, q)
}

#[test]
fn matches_scipy_with_the_papers_parameters() {
    let text = include_str!("fixtures/stft_scipy_reference.json");
    let fixture: serde_json::Value = serde_json::from_str(text).unwrap();
    let get = |k: &str| fixture[k].as_i64().unwrap_or_else(|| panic!("fixture field {k}"));

    let config = StftConfig {
        sample_rate: get("sample_rate") as u32,
        n_fft: get("n_fft") as usize,
        win_length: get("win_length") as usize,
        hop_length: get("hop_length") as usize,
    };
    assert_eq!(config, StftConfig::default());

    let n_samples = get("n_samples") as usize;
    let (samples, q) = reference_signal(n_samples);
    // Same input as the Python side, exactly.
    assert_eq!(q.iter().sum::<i64>(), get("sum_q"));
    assert_eq!(q.iter().map(|v| v.abs()).sum::<i64>(), get("sum_abs_q"));
    assert_eq!(q.iter().enumerate().map(|(n, v)| n as i64 * v).sum::<i64>(), get("sum_n_q"));

    let stft = Stft::new(config).unwrap();
    assert_eq!(stft.n_frames(n_samples), get("n_frames") as usize);
    let spec = stft.magnitude(&samples);
    assert_eq!(spec.n_frames, get("n_frames") as usize);
    assert_eq!(spec.n_bins, get("n_bins") as usize);

    let values = fixture["values"].as_array().unwrap();
    assert!(values.len() > 100);
    let mut worst = 0.0f64;
    for v in values {
        let f = v[0].as_u64().unwrap() as usize;
        let t = v[1].as_u64().unwrap() as usize;
        let expected = v[2].as_f64().unwrap();
        let got = spec.get(f, t);
        let rel = (got - expected).abs() / expected.abs();
        worst = worst.max(rel);
        assert!(rel <= 1e-9, "bin {f} frame {t}: {got} vs scipy {expected} (relative {rel:e})");
    }
    println!("{} values, worst relative difference {worst:e}", values.len());
}
