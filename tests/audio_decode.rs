//! Decoding: formats, bit depths, channels, excerpts, and broken files.
//!
//! WAV files are written in the test (with `hound`, or byte by byte for what
//! hound cannot write); compressed formats come from tiny committed fixtures
//! (`tests/fixtures/make_audio_fixtures.py`).

mod common;

use std::path::{Path, PathBuf};

use sscnmf::audio::{decode_bytes, load_audio, Audio, ChannelSelection, DecodeOptions};
use sscnmf::ErrorKind;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn opts() -> DecodeOptions {
    DecodeOptions::default()
}

/// Write a WAV with hound; `frames[i][c]` is sample `i` of channel `c`.
fn write_wav(path: &Path, rate: u32, bits: u16, float: bool, frames: &[Vec<f64>]) {
    let spec = hound::WavSpec {
        channels: frames[0].len() as u16,
        sample_rate: rate,
        bits_per_sample: bits,
        sample_format: if float { hound::SampleFormat::Float } else { hound::SampleFormat::Int },
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for frame in frames {
        for &v in frame {
            if float {
                w.write_sample(v as f32).unwrap();
            } else {
                let scale = (1i64 << (bits - 1)) as f64;
                let q = (v * scale).round().clamp(-scale, scale - 1.0) as i32;
                match bits {
                    8 => w.write_sample(q as i8).unwrap(),
                    16 => w.write_sample(q as i16).unwrap(),
                    _ => w.write_sample(q).unwrap(),
                }
            }
        }
    }
    w.finalize().unwrap();
}

/// A canonical 44-byte-header WAV: `format_tag` 1 (PCM) or 3 (float).
fn wav_bytes(format_tag: u16, channels: u16, rate: u32, bits: u16, data: &[u8]) -> Vec<u8> {
    common::raw_wav(format_tag, channels, rate, bits, data.len() as u32, data)
}

fn i16_data(values: &[i16]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn sine(freq: f64, rate: u32, n: usize, amp: f64) -> Vec<f64> {
    (0..n).map(|i| amp * (2.0 * std::f64::consts::PI * freq * i as f64 / f64::from(rate)).sin()).collect()
}

/// Frequency from interpolated rising zero crossings, over the middle 80 %.
fn frequency(x: &[f32], rate: u32) -> f64 {
    let (a, b) = (x.len() / 10, x.len() * 9 / 10);
    let mut crossings = Vec::new();
    for i in a..b - 1 {
        let (y0, y1) = (f64::from(x[i]), f64::from(x[i + 1]));
        if y0 < 0.0 && y1 >= 0.0 {
            crossings.push(i as f64 + y0 / (y0 - y1));
        }
    }
    assert!(crossings.len() >= 3, "too few zero crossings");
    let periods = (crossings.len() - 1) as f64;
    periods / ((crossings[crossings.len() - 1] - crossings[0]) / f64::from(rate))
}

fn assert_err(result: sscnmf::Result<Audio>, kind: ErrorKind, needle: &str) -> String {
    let e = result.expect_err("expected an error");
    let text = e.to_string();
    assert_eq!(e.kind(), kind, "{text}");
    assert!(text.contains(needle), "{text:?} should contain {needle:?}");
    assert!(!text.contains('\n'), "{text:?} is not one line");
    text
}

#[test]
fn every_wav_sample_format_decodes_to_the_same_values() {
    let dir = tempfile::tempdir().unwrap();
    let x = sine(440.0, 8000, 800, 0.5);
    let frames: Vec<Vec<f64>> = x.iter().map(|&v| vec![v]).collect();
    for (bits, float, tol) in [
        (8, false, 1.0 / 128.0),
        (16, false, 1.0 / 32768.0),
        (24, false, 1.0 / 8388608.0),
        (32, false, 1e-7),
        (32, true, 1e-7),
    ] {
        let name = format!("sine440-{bits}bit{}-8000Hz-mono.wav", if float { "-float" } else { "" });
        let path = dir.path().join(&name);
        write_wav(&path, 8000, bits, float, &frames);
        let a = load_audio(&path, &opts(), 8000).unwrap();
        assert_eq!((a.sample_rate, a.source_sample_rate, a.source_channels), (8000, 8000, 1), "{name}");
        assert_eq!(a.samples.len(), 800, "{name}");
        assert!((a.duration_seconds() - 0.1).abs() < 1e-12);
        for (i, (&got, &want)) in a.samples.iter().zip(&x).enumerate() {
            assert!((f64::from(got) - want).abs() <= tol, "{name} sample {i}: {got} vs {want}");
        }
    }
}

#[test]
fn integer_samples_are_scaled_by_full_scale() {
    // 16-bit: q / 32768 exactly; the extremes map to -1 and (32767/32768).
    let data = i16_data(&[0, 1, -1, 16384, -32768, 32767]);
    let a = decode_bytes(wav_bytes(1, 1, 44100, 16, &data), Some("wav"), &opts()).unwrap();
    assert_eq!(a.samples, vec![0.0, 1.0 / 32768.0, -1.0 / 32768.0, 0.5, -1.0, 32767.0 / 32768.0]);
    // 8-bit WAV is unsigned: 128 is zero.
    let a = decode_bytes(wav_bytes(1, 1, 8000, 8, &[128, 255, 0, 192]), Some("wav"), &opts()).unwrap();
    assert_eq!(a.samples, vec![0.0, 127.0 / 128.0, -1.0, 0.5]);
}

#[test]
fn float64_wav_decodes() {
    let values = [0.0f64, 0.25, -0.5, 0.999, 1.5];
    let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let a = decode_bytes(wav_bytes(3, 1, 48000, 64, &data), Some("wav"), &opts()).unwrap();
    let want: Vec<f32> = values.iter().map(|&v| v as f32).collect();
    // Float values beyond ±1 are kept, not clipped.
    assert_eq!(a.samples, want);
    assert_eq!(a.sample_rate, 48000);
}

#[test]
fn channels_are_mixed_or_selected() {
    let dir = tempfile::tempdir().unwrap();
    for n_channels in [1usize, 2, 6] {
        let frames: Vec<Vec<f64>> = (0..500)
            .map(|i| (0..n_channels).map(|c| ((i * 7 + c * 1000) % 2001) as f64 / 4000.0 - 0.25).collect())
            .collect();
        let path = dir.path().join(format!("ramp-16bit-8000Hz-{n_channels}ch.wav"));
        write_wav(&path, 8000, 16, false, &frames);
        let q = |v: f64| ((v * 32768.0).round() / 32768.0) as f32;

        let mix = load_audio(&path, &opts(), 8000).unwrap();
        assert_eq!(mix.source_channels, n_channels);
        for (i, frame) in frames.iter().enumerate() {
            let mean = frame.iter().map(|&v| f64::from(q(v))).sum::<f64>() / n_channels as f64;
            assert!((f64::from(mix.samples[i]) - mean).abs() < 1e-7, "{n_channels} channels, frame {i}");
        }
        for c in 0..n_channels {
            let o = DecodeOptions { channel: ChannelSelection::Channel(c), ..opts() };
            let one = load_audio(&path, &o, 8000).unwrap();
            let want: Vec<f32> = frames.iter().map(|f| q(f[c])).collect();
            assert_eq!(one.samples, want, "{n_channels} channels, channel {c}");
        }
        let o = DecodeOptions { channel: ChannelSelection::Channel(n_channels), ..opts() };
        let text = assert_err(load_audio(&path, &o, 8000), ErrorKind::Audio, "(numbered from 0)");
        assert!(text.contains(&format!("has no channel {n_channels}")), "{text}");
        assert!(text.contains(&format!("it has {n_channels} channel")), "{text}");
        assert!(text.contains(path.to_str().unwrap()), "{text}");
    }
}

#[test]
fn offset_and_duration_cut_in_source_samples() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ramp-16bit-8000Hz-mono-1s.wav");
    let values: Vec<i16> = (0..8000).map(|i| (i - 4000) as i16).collect();
    std::fs::write(&path, wav_bytes(1, 1, 8000, 16, &i16_data(&values))).unwrap();
    let sample = |i: usize| f32::from(values[i]) / 32768.0;

    let o = DecodeOptions { offset_seconds: 0.25, duration_seconds: Some(0.5), ..opts() };
    let a = load_audio(&path, &o, 8000).unwrap();
    assert_eq!(a.samples.len(), 4000);
    assert_eq!(a.samples[0], sample(2000));
    assert_eq!(a.samples[3999], sample(5999));
    // Same from memory.
    let b = decode_bytes(std::fs::read(&path).unwrap(), Some("wav"), &o).unwrap();
    assert_eq!(a, b);

    // Offset only: to the end.
    let o = DecodeOptions { offset_seconds: 0.9, ..opts() };
    let a = load_audio(&path, &o, 8000).unwrap();
    assert_eq!((a.samples.len(), a.samples[0]), (800, sample(7200)));

    // Duration past the end stops at the end.
    let o = DecodeOptions { offset_seconds: 0.5, duration_seconds: Some(10.0), ..opts() };
    assert_eq!(load_audio(&path, &o, 8000).unwrap().samples.len(), 4000);

    // Offset past the end is an error naming the file.
    let o = DecodeOptions { offset_seconds: 1.0, ..opts() };
    let text = assert_err(load_audio(&path, &o, 8000), ErrorKind::Audio, "past the end of the audio (1.000 s long)");
    assert!(text.starts_with(path.to_str().unwrap()), "{text}");

    // The cut is applied before resampling: 0.25 s at 16 kHz.
    let o = DecodeOptions { offset_seconds: 0.25, duration_seconds: Some(0.25), ..opts() };
    let a = load_audio(&path, &o, 16000).unwrap();
    assert_eq!((a.samples.len(), a.sample_rate, a.source_sample_rate), (4000, 16000, 8000));
}

#[test]
fn max_duration_is_enforced_with_a_clear_message() {
    let data = i16_data(&vec![100i16; 16000]);
    let bytes = wav_bytes(1, 1, 8000, 16, &data);
    let o = DecodeOptions { max_duration_seconds: 1.5, ..opts() };
    assert_err(decode_bytes(bytes.clone(), Some("wav"), &o), ErrorKind::Audio, "raise --max-duration");
    // Exactly at the limit, or an excerpt within it, is fine.
    let o = DecodeOptions { max_duration_seconds: 2.0, ..opts() };
    assert_eq!(decode_bytes(bytes.clone(), Some("wav"), &o).unwrap().samples.len(), 16000);
    let o = DecodeOptions { max_duration_seconds: 1.5, duration_seconds: Some(1.0), offset_seconds: 0.5, ..opts() };
    assert_eq!(decode_bytes(bytes, Some("wav"), &o).unwrap().samples.len(), 8000);
}

#[test]
fn silence_is_not_an_error() {
    let a = decode_bytes(wav_bytes(1, 2, 44100, 16, &vec![0u8; 4 * 1000]), Some("wav"), &opts()).unwrap();
    assert_eq!(a.samples, vec![0.0; 1000]);
    assert_eq!(a.source_channels, 2);
}

#[test]
fn empty_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.wav");
    std::fs::write(&path, b"").unwrap();
    let text = assert_err(load_audio(&path, &opts(), 44100), ErrorKind::Audio, "empty file");
    assert_eq!(text, format!("{}: empty file", path.display()));
    assert_err(decode_bytes(Vec::new(), Some("wav"), &opts()), ErrorKind::Audio, "empty file");
}

#[test]
fn missing_file_and_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.wav");
    let text = assert_err(load_audio(&path, &opts(), 44100), ErrorKind::Io, "no such file");
    assert!(text.contains("nope.wav"));
    assert_err(load_audio(dir.path(), &opts(), 44100), ErrorKind::Io, "is a directory");
}

#[test]
fn text_file_named_wav_is_not_audio() {
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in [
        ("notes.wav", &b"this is not a wave file, just some text\n"[..]),
        ("notes.flac", &b"hello"[..]),
        ("notes.mp3", &b"x"[..]),
        ("binary.ogg", &[0u8, 1, 2, 3, 4, 5, 6, 7, 8, 9][..]),
        ("noext", &b"plain text without any extension at all"[..]),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        let text = assert_err(load_audio(&path, &opts(), 44100), ErrorKind::Audio, "not a supported audio file (");
        assert!(text.contains(name), "{text}");
    }
}

#[test]
fn truncated_header_is_an_error() {
    let full = wav_bytes(1, 1, 44100, 16, &i16_data(&[1, 2, 3, 4]));
    for cut in [4usize, 12, 20, 30, 40] {
        let e = decode_bytes(full[..cut].to_vec(), Some("wav"), &opts()).expect_err(&format!("cut at {cut}"));
        assert_eq!(e.kind(), ErrorKind::Audio, "cut at {cut}: {e}");
        assert!(!e.to_string().contains('\n'));
    }
    let e = decode_bytes(full[..30].to_vec(), Some("wav"), &opts()).unwrap_err();
    assert!(e.to_string().contains("truncated"), "{e}");
}

#[test]
fn header_only_wav_has_no_samples() {
    let e = decode_bytes(wav_bytes(1, 1, 44100, 16, &[]), Some("wav"), &opts()).unwrap_err();
    assert_eq!(e.message(), "contains no audio samples");
}

#[test]
fn truncated_data_decodes_every_complete_frame() {
    let values: Vec<i16> = (0..5000).map(|i| (i % 1000) as i16 - 500).collect();
    let full = wav_bytes(1, 1, 44100, 16, &i16_data(&values));
    // Cut at an odd byte: the half sample at the end is dropped.
    for kept in [1usize, 100, 1151, 1152, 1153, 2500, 4999] {
        let bytes = full[..44 + 2 * kept + 1].to_vec();
        let a = decode_bytes(bytes, Some("wav"), &opts()).unwrap();
        let want: Vec<f32> = values[..kept].iter().map(|&v| f32::from(v) / 32768.0).collect();
        assert_eq!(a.samples, want, "kept {kept}");
    }
    // Stereo, cut in the middle of a frame.
    let stereo = wav_bytes(1, 2, 44100, 16, &i16_data(&values));
    let a = decode_bytes(stereo[..44 + 4 * 700 + 2].to_vec(), Some("wav"), &opts()).unwrap();
    assert_eq!(a.samples.len(), 700);
}

#[test]
fn lying_header_lengths_decode_the_samples_present() {
    let values: Vec<i16> = (0..3000).map(|i| (i * 3) as i16).collect();
    let want: Vec<f32> = values.iter().map(|&v| f32::from(v) / 32768.0).collect();
    let base = wav_bytes(1, 1, 44100, 16, &i16_data(&values));
    let set = |b: &mut Vec<u8>, at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_le_bytes());

    // Streamed WAV: both lengths 0xFFFFFFFF.
    let mut b = base.clone();
    set(&mut b, 4, u32::MAX);
    set(&mut b, 40, u32::MAX);
    assert_eq!(decode_bytes(b, Some("wav"), &opts()).unwrap().samples, want);

    // Data length larger than the file, RIFF length consistent with it.
    let mut b = base.clone();
    set(&mut b, 4, 36 + 1_000_000);
    set(&mut b, 40, 1_000_000);
    assert_eq!(decode_bytes(b, Some("wav"), &opts()).unwrap().samples, want);

    // Data length larger than the RIFF length claims.
    let mut b = base.clone();
    set(&mut b, 40, 1_000_000);
    assert_eq!(decode_bytes(b, Some("wav"), &opts()).unwrap().samples, want);

    // RIFF length too short for a data chunk that is all there.
    let mut b = base.clone();
    set(&mut b, 4, 100);
    assert_eq!(decode_bytes(b, Some("wav"), &opts()).unwrap().samples, want);

    // Data length shorter than the file: only what the header says.
    let mut b = base.clone();
    set(&mut b, 40, 2000);
    assert_eq!(decode_bytes(b, Some("wav"), &opts()).unwrap().samples, want[..1000].to_vec());
}

#[test]
fn header_claiming_hours_does_not_allocate_hours() {
    // 8 kHz, 8-bit: a data length of 0xFFFFFFFF bytes claims ~149 hours.
    let mut b = wav_bytes(1, 1, 8000, 8, &vec![128u8; 8000]);
    b[40..44].copy_from_slice(&u32::MAX.to_le_bytes());
    b[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    let a = decode_bytes(b.clone(), Some("wav"), &opts()).unwrap();
    assert_eq!(a.samples.len(), 8000);
    assert!(a.samples.capacity() < 80_000, "capacity {}", a.samples.capacity());
    // Also through a file.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("liar.wav");
    std::fs::write(&path, &b).unwrap();
    assert_eq!(load_audio(&path, &opts(), 8000).unwrap().samples.len(), 8000);
}

#[test]
fn non_finite_samples_are_an_error_with_their_time() {
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut values = vec![0.1f32; 44100];
        values[22050 + 441] = bad;
        let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nan-32bit-float-44100Hz-mono.wav");
        std::fs::write(&path, wav_bytes(3, 1, 44100, 32, &data)).unwrap();
        let text = assert_err(
            load_audio(&path, &opts(), 44100),
            ErrorKind::Audio,
            "contains non-finite samples (NaN or infinity) at 0.510 s",
        );
        assert!(text.starts_with(path.to_str().unwrap()));
        // Outside the excerpt it does not matter.
        let o = DecodeOptions { duration_seconds: Some(0.5), ..opts() };
        assert_eq!(load_audio(&path, &o, 44100).unwrap().samples.len(), 22050);
    }
    // f64 too large for f32 becomes infinity: also an error.
    let data: Vec<u8> = [0.0f64, 1e300].iter().flat_map(|v| v.to_le_bytes()).collect();
    assert_err(decode_bytes(wav_bytes(3, 1, 8000, 64, &data), Some("wav"), &opts()), ErrorKind::Audio, "non-finite");
}

#[test]
fn flac_fixture_is_lossless() {
    let path = fixture("sine440-660-16bit-22050Hz-stereo-0.25s.flac");
    let n = 5512; // numpy: round(22050 * 0.25), half to even
    let q = |f: f64, i: usize| {
        ((32767.0 * 0.5 * (2.0 * std::f64::consts::PI * f * i as f64 / 22050.0).sin()).round() / 32768.0) as f32
    };
    for (c, f) in [(0usize, 440.0), (1, 660.0)] {
        let o = DecodeOptions { channel: ChannelSelection::Channel(c), ..opts() };
        let a = load_audio(&path, &o, 22050).unwrap();
        assert_eq!((a.source_channels, a.source_sample_rate, a.samples.len()), (2, 22050, n));
        for (i, &v) in a.samples.iter().enumerate() {
            assert!((v - q(f, i)).abs() <= 1.0 / 32768.0, "channel {c} sample {i}");
        }
    }
    let mix = load_audio(&path, &opts(), 22050).unwrap();
    assert!((mix.samples[100] - (q(440.0, 100) + q(660.0, 100)) / 2.0).abs() < 1e-4);
}

#[test]
fn mp3_fixture_decodes_time_aligned() {
    let path = fixture("sine440-44100Hz-mono-0.5s.mp3");
    let a = load_audio(&path, &opts(), 44100).unwrap();
    assert_eq!((a.source_channels, a.source_sample_rate), (1, 44100));
    // Gapless trimming: the encoder's delay and padding are removed (to
    // within a frame of the original 22050 samples).
    assert!((a.samples.len() as i64 - 22050).abs() <= 1152, "{} samples", a.samples.len());
    assert!((frequency(&a.samples, 44100) - 440.0).abs() < 1.0);
    let peak = a.samples.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    assert!((peak - 0.5).abs() < 0.05, "peak {peak}");
}

#[test]
fn ogg_vorbis_fixture_decodes_both_channels() {
    let path = fixture("sine440-660-44100Hz-stereo-0.5s.ogg");
    for (c, f) in [(0usize, 440.0), (1, 660.0)] {
        let o = DecodeOptions { channel: ChannelSelection::Channel(c), ..opts() };
        let a = load_audio(&path, &o, 44100).unwrap();
        assert_eq!((a.source_channels, a.source_sample_rate), (2, 44100));
        assert!((a.samples.len() as i64 - 22050).abs() <= 2048, "{} samples", a.samples.len());
        assert!((frequency(&a.samples, 44100) - f).abs() < 1.0, "channel {c}");
    }
}

#[test]
fn aiff_fixture_decodes() {
    let path = fixture("sine440-16bit-8000Hz-mono-0.1s.aiff");
    let a = load_audio(&path, &opts(), 8000).unwrap();
    assert_eq!((a.samples.len(), a.source_channels), (800, 1));
    for (i, &v) in a.samples.iter().enumerate() {
        let want = (32767.0 * 0.5 * (2.0 * std::f64::consts::PI * 440.0 * i as f64 / 8000.0).sin()).round() / 32768.0;
        assert!((f64::from(v) - want).abs() <= 1.0 / 32768.0, "sample {i}");
    }
}

/// Truncated and corrupted compressed files: never a panic; any error is one line.
#[test]
fn damaged_files_never_panic() {
    let mut seed = 0x9e3779b97f4a7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for name in [
        "sine440-44100Hz-mono-0.5s.mp3",
        "sine440-660-44100Hz-stereo-0.5s.ogg",
        "sine440-660-16bit-22050Hz-stereo-0.25s.flac",
        "sine440-16bit-8000Hz-mono-0.1s.aiff",
    ] {
        let bytes = std::fs::read(fixture(name)).unwrap();
        let ext = name.rsplit('.').next();
        for cut in (0..bytes.len()).step_by(97).chain([bytes.len() - 1]) {
            if let Err(e) = decode_bytes(bytes[..cut].to_vec(), ext, &opts()) {
                assert!(!e.to_string().contains('\n'));
            }
        }
        for _ in 0..60 {
            let mut b = bytes.clone();
            for _ in 0..8 {
                let at = (next() % b.len() as u64) as usize;
                b[at] = next() as u8;
            }
            if let Err(e) = decode_bytes(b, ext, &opts()) {
                assert!(!e.to_string().contains('\n'));
            }
        }
    }
}

#[test]
fn truncated_compressed_files_keep_what_is_there() {
    // FLAC: 5512 frames in blocks of 4096; cut inside the second block, the
    // first block is all there.
    let bytes = std::fs::read(fixture("sine440-660-16bit-22050Hz-stereo-0.25s.flac")).unwrap();
    let a = decode_bytes(bytes[..bytes.len() * 9 / 10].to_vec(), Some("flac"), &opts()).unwrap();
    assert_eq!(a.samples.len(), 4096);
    // MP3 cut at two thirds: about two thirds of the audio.
    let bytes = std::fs::read(fixture("sine440-44100Hz-mono-0.5s.mp3")).unwrap();
    let a = decode_bytes(bytes[..bytes.len() * 2 / 3].to_vec(), Some("mp3"), &opts()).unwrap();
    let d = a.duration_seconds();
    assert!(d > 0.2 && d < 0.45, "{d} s");
}

/// The dev dataset's FLAC (44.1 kHz mono 16-bit, 3.5 s), when present.
#[test]
fn dev_dataset_flac() {
    let root = common::dev_data_root();
    let path = root.join("FluidR3/ISOL/NO/MAPS_ISOL_NO_M_S0_M60_FluidR3.flac");
    if !path.exists() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("dev dataset missing in CI: {}", path.display());
        }
        eprintln!("note: {} not found (set SSCNMF_DATA); skipping", path.display());
        return;
    }
    let a = load_audio(&path, &opts(), 44100).unwrap();
    assert_eq!((a.source_sample_rate, a.source_channels, a.sample_rate), (44100, 1, 44100));
    assert!((a.duration_seconds() - 3.5).abs() < 0.1, "{} s", a.duration_seconds());
    assert!(a.samples.iter().all(|v| v.abs() <= 1.0));
    assert!(a.samples.iter().any(|&v| v != 0.0));
    // 16-bit content: every sample is a multiple of 1/32768.
    assert!(a.samples.iter().all(|&v| (v * 32768.0).fract() == 0.0));
    // Resampled on load, the length follows the ratio.
    let b = load_audio(&path, &opts(), 22050).unwrap();
    assert_eq!(b.samples.len(), (a.samples.len() as f64 / 2.0).round() as usize);
}
