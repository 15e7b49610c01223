//! Helpers shared by the integration tests (each test binary uses some).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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

/// A minimal SoundFont 2 file, written from scratch: one preset (bank 0,
/// program 0, "Sine") of one instrument whose only sample is one second of a
/// 441 Hz tone with two overtones (amplitudes 1, 1/2, 1/4), recorded at
/// 22 050 Hz as MIDI pitch 69 minus 4 cents, looped over whole periods, with
/// a 0.3 s release. The layout follows the SoundFont 2.01 specification:
/// RIFF `sfbk` holding the `INFO`, `sdta` (16-bit samples, each followed by
/// 46 zero samples) and `pdta` (presets, instruments, samples, each list with
/// its terminal record) lists.
pub fn tiny_soundfont() -> Vec<u8> {
    fn chunk(id: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut v = id.to_vec();
        v.extend((body.len() as u32).to_le_bytes());
        v.extend(body);
        if body.len() % 2 == 1 {
            v.push(0);
        }
        v
    }
    fn list(kind: &[u8; 4], chunks: &[Vec<u8>]) -> Vec<u8> {
        let mut body = kind.to_vec();
        for c in chunks {
            body.extend(c);
        }
        chunk(b"LIST", &body)
    }
    fn name(s: &str) -> Vec<u8> {
        let mut v = s.as_bytes().to_vec();
        v.resize(20, 0);
        v
    }
    let u16s = |xs: &[u16]| xs.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let u32s = |xs: &[u32]| xs.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();

    let rate = 22_050u32;
    let period = 50usize; // 441 Hz
    let n = rate as usize;
    let mut samples: Vec<i16> = (0..n)
        .map(|i| {
            let ph = 2.0 * std::f64::consts::PI * (i % period) as f64 / period as f64;
            let x = ph.sin() + 0.5 * (2.0 * ph).sin() + 0.25 * (3.0 * ph).sin();
            (x / 1.75 * 20_000.0).round() as i16
        })
        .collect();
    samples.extend(std::iter::repeat_n(0, 46));
    let smpl: Vec<u8> = samples.iter().flat_map(|x| x.to_le_bytes()).collect();

    // Generators: (operator, amount).
    let gens = |g: &[(u16, i16)]| {
        g.iter().flat_map(|&(op, amt)| [op.to_le_bytes(), amt.to_le_bytes()]).flatten().collect::<Vec<u8>>()
    };
    // Preset zone: instrument 0 (41). Terminal generator record: zeros.
    let pgen = [gens(&[(41, 0)]), vec![0; 4]].concat();
    // Instrument zone: release 0.3 s (38, timecents), loop continuously (54),
    // sample 0 (53, last).
    let release = (1200.0 * 0.3f64.log2()).round() as i16;
    let igen = [gens(&[(38, release), (54, 1), (53, 0)]), vec![0; 4]].concat();

    let mut phdr = name("Sine");
    phdr.extend(u16s(&[0, 0, 0])); // preset, bank, bag index
    phdr.extend(u32s(&[0, 0, 0])); // library, genre, morphology
    phdr.extend(name("EOP"));
    phdr.extend(u16s(&[0, 0, 1]));
    phdr.extend(u32s(&[0, 0, 0]));
    let pbag = u16s(&[0, 0, 1, 0]); // zone 0 starts at generator 0; terminal at 1
    let mut inst = name("Sine");
    inst.extend(u16s(&[0]));
    inst.extend(name("EOI"));
    inst.extend(u16s(&[1]));
    let ibag = u16s(&[0, 0, 3, 0]);
    let mut shdr = name("Sine");
    shdr.extend(u32s(&[0, n as u32, (10 * period) as u32, (400 * period) as u32, rate]));
    shdr.extend([69u8, (-4i8) as u8]); // original pitch, pitch correction (cents)
    shdr.extend(u16s(&[0, 1])); // sample link, mono sample
    shdr.extend(name("EOS"));
    shdr.extend(vec![0u8; 26]);

    let info =
        list(b"INFO", &[chunk(b"ifil", &u16s(&[2, 1])), chunk(b"isng", b"EMU8000\0"), chunk(b"INAM", b"Tiny sine\0")]);
    let sdta = list(b"sdta", &[chunk(b"smpl", &smpl)]);
    let pdta = list(
        b"pdta",
        &[
            chunk(b"phdr", &phdr),
            chunk(b"pbag", &pbag),
            chunk(b"pmod", &[0; 10]),
            chunk(b"pgen", &pgen),
            chunk(b"inst", &inst),
            chunk(b"ibag", &ibag),
            chunk(b"imod", &[0; 10]),
            chunk(b"igen", &igen),
            chunk(b"shdr", &shdr),
        ],
    );
    let mut body = b"sfbk".to_vec();
    body.extend(info);
    body.extend(sdta);
    body.extend(pdta);
    chunk(b"RIFF", &body)
}

/// A piano-like tone at `rate` Hz: 8 harmonics of falling amplitude, 5 ms
/// attack, exponential decay (0.6 s), peak about 0.27.
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

/// A WAV file's bytes written by hand: a 16-byte `fmt ` chunk (`format` 1 =
/// PCM, 3 = float) and a data chunk that claims `claimed` bytes and holds `data`.
pub fn raw_wav(format: u16, channels: u16, rate: u32, bits: u16, claimed: u32, data: &[u8]) -> Vec<u8> {
    let block = channels * bits / 8;
    let mut b = Vec::new();
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&claimed.saturating_add(36).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&format.to_le_bytes());
    b.extend_from_slice(&channels.to_le_bytes());
    b.extend_from_slice(&rate.to_le_bytes());
    b.extend_from_slice(&(rate * u32::from(block)).to_le_bytes());
    b.extend_from_slice(&block.to_le_bytes());
    b.extend_from_slice(&bits.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&claimed.to_le_bytes());
    b.extend_from_slice(data);
    b
}

/// Runs the `sscnmf` binary with `args`.
pub fn sscnmf(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sscnmf")).args(args).output().expect("runs")
}

/// Where the dev dataset is looked for: `$SSCNMF_DATA`, else
/// `../shared/data/dev` beside the checkout (it may be absent).
pub fn dev_data_root() -> PathBuf {
    std::env::var_os("SSCNMF_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/dev"))
}

/// A tiny but valid dictionary: STFT 16/8/4 at 8 kHz, 2 notes, τ = 2.
pub fn tiny_dictionary() -> sscnmf::templates::TemplateDictionary {
    use sscnmf::factorization::ConvTemplates;
    use sscnmf::spectrogram::StftConfig;
    use sscnmf::templates::{TemplateDictionary, TemplateParams};
    let stft = StftConfig { sample_rate: 8000, n_fft: 16, win_length: 8, hop_length: 4 };
    let data: Vec<f32> = (0..9 * 2 * 2).map(|i| 0.01 + (i % 5) as f32 / 40.0).collect();
    TemplateDictionary {
        templates: ConvTemplates::new(9, 2, 2, data).unwrap(),
        pitches: vec![60, 64],
        intensities: Vec::new(),
        params: TemplateParams { stft, beta: 1.0, iterations: 1, tool_version: "test".into(), source: "test".into() },
        calibration: None,
    }
}

/// Exit code 2 and a single line `error: ...` that mentions `needle`, no panic.
pub fn assert_input_error(o: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "stderr: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line expected: {err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains(needle), "`{needle}` not in: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// |DFT| of `x` at `freq` Hz (sampled at `rate` Hz), per sample.
pub fn dft_magnitude(x: &[f32], rate: f64, freq: f64) -> f64 {
    let (mut re, mut im) = (0.0, 0.0);
    for (i, &v) in x.iter().enumerate() {
        let ph = 2.0 * std::f64::consts::PI * freq * i as f64 / rate;
        re += v as f64 * ph.cos();
        im += v as f64 * ph.sin();
    }
    (re * re + im * im).sqrt() / x.len() as f64
}

/// The largest |sample|.
pub fn peak(x: &[f32]) -> f32 {
    x.iter().fold(0.0f32, |m, v| m.max(v.abs()))
}
