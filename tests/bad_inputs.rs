//! The bad-input corpus (issue 6): every input a user may feed the tool,
//! generated here, run through the real binary, with its exact outcome.
//!
//! Each case builds its inputs in a fresh temporary folder and runs
//! `sscnmf`. A failure must exit with code 2, print ONE line `error: …`
//! naming the file and saying what is wrong (an expected phrase), print no
//! panic or backtrace (RUST_BACKTRACE=1 is set), and leave the folder as it
//! was: no output, no temporary file. A success must exit with 0 and write
//! exactly the expected output (a MIDI file whose notes are checked), and
//! nothing else. The catalogue of cases is `tests/bad-inputs/README.md`.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use sscnmf::factorization::RankOneCnmf;
use sscnmf::notes::{read_notes, Note};
use sscnmf::spectrogram::StftConfig;
use sscnmf::templates::{NoteRecording, TemplateDictionary, TemplateLearner};

const RATE: u32 = 44100;
const PITCHES: [u8; 2] = [60, 67];
/// The test song: (onset in seconds, pitch); 2 s long.
const SONG: [(f64, u8); 2] = [(0.3, 60), (1.0, 67)];
const SONG_SECONDS: f64 = 2.0;
/// δ for the test song (the tones ring past the templates, see
/// `tests/synthetic_end_to_end.rs`).
const THRESHOLD: &str = "0.25";

/// Template files shared by every case, made once per test binary.
struct Shared {
    /// Learned from the test tones: 44.1 kHz, the default STFT.
    templates: PathBuf,
    /// The same tones learned at 22.05 kHz, n_fft 4096, win 2048, hop 441.
    templates_22050: PathBuf,
    /// The same tones learned at 44.1 kHz with n_fft 4096, win 2048.
    templates_fft4096: PathBuf,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bad-inputs");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let learn = |name: &str, stft: StftConfig| {
            let rate = stft.sample_rate;
            let notes: Vec<NoteRecording> = PITCHES
                .iter()
                .map(|&p| {
                    let mut audio = vec![0.0f32; rate as usize / 4];
                    audio.extend(common::tone(rate, p, 1.5));
                    let path = dir.join(format!("{name}-note{p}.wav"));
                    common::write_wav(&path, rate, &audio);
                    NoteRecording { path, pitch: p }
                })
                .collect();
            let learner = TemplateLearner {
                stft,
                cnmf: RankOneCnmf { iterations: 100, ..Default::default() },
                ..Default::default()
            };
            let path = dir.join(format!("{name}.templates"));
            learner.learn(&notes, |_| {}).unwrap().save(&path).unwrap();
            path
        };
        Shared {
            templates: learn("piano", StftConfig::default()),
            templates_22050: learn(
                "piano-22050",
                StftConfig { sample_rate: 22050, n_fft: 4096, win_length: 2048, hop_length: 441 },
            ),
            templates_fft4096: learn(
                "piano-fft4096",
                StftConfig { n_fft: 4096, win_length: 2048, ..Default::default() },
            ),
        }
    })
}

// ---------------------------------------------------------------------------
// Inputs.

/// The test song at `rate` Hz, mono.
fn song(rate: u32) -> Vec<f32> {
    let mut out = vec![0.0f32; (SONG_SECONDS * f64::from(rate)) as usize];
    for (onset, pitch) in SONG {
        let start = (onset * f64::from(rate)) as usize;
        for (i, s) in common::tone(rate, pitch, 0.9).into_iter().enumerate() {
            out[start + i] += s;
        }
    }
    out
}

/// A WAV file by hound: `samples` (mono, in −1..1, or beyond for float) on
/// every one of `channels` channels, as `bits`-bit integers or 32-bit floats.
fn hound_wav(path: &Path, rate: u32, channels: u16, bits: u16, float: bool, samples: &[f32]) {
    let spec = hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: bits,
        sample_format: if float { hound::SampleFormat::Float } else { hound::SampleFormat::Int },
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    let full = ((1i64 << (bits - 1)) - 1) as f64;
    for &s in samples {
        for _ in 0..channels {
            if float {
                w.write_sample(s).unwrap();
            } else {
                w.write_sample((f64::from(s).clamp(-1.0, 1.0) * full).round() as i32).unwrap();
            }
        }
    }
    w.finalize().unwrap();
}

fn pcm16(samples: &[f32]) -> Vec<u8> {
    samples.iter().flat_map(|&s| ((s.clamp(-1.0, 1.0) * 32767.0).round() as i16).to_le_bytes()).collect()
}

/// The song as a 16-bit mono WAV at 44.1 kHz, at `dir/name`; returns its path.
fn song_wav(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    common::write_wav(&path, RATE, &song(RATE));
    path
}

/// A full-scale square wave at the frequency of MIDI 60, 2 s.
fn square(rate: u32, amplitude: f32) -> Vec<f32> {
    let period = f64::from(rate) / 261.625_565;
    (0..2 * rate as usize).map(|i| if (i as f64 % period) < period / 2.0 { amplitude } else { -amplitude }).collect()
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)).unwrap()
}

/// The shared 44.1 kHz templates' bytes.
fn template_bytes() -> Vec<u8> {
    std::fs::read(&shared().templates).unwrap()
}

/// `bytes` with the first occurrence of `from` replaced by `to` (same length).
fn replace(bytes: &[u8], from: &str, to: &str) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let at = bytes.windows(from.len()).position(|w| w == from.as_bytes()).unwrap_or_else(|| panic!("{from} not found"));
    let mut out = bytes.to_vec();
    out[at..at + to.len()].copy_from_slice(to.as_bytes());
    out
}

/// The safetensors header length of a templates file (its first 8 bytes).
fn header_len(bytes: &[u8]) -> usize {
    u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize
}

/// A standard MIDI file (format 0, 480 ticks per quarter) with one track of `events`.
fn smf(events: &[u8]) -> Vec<u8> {
    let mut b = b"MThd\0\0\0\x06\0\0\0\x01\x01\xe0MTrk".to_vec();
    b.extend_from_slice(&(events.len() as u32).to_be_bytes());
    b.extend_from_slice(events);
    b
}

/// Running status, a tempo change, a zero-length note and two overlapping
/// notes of one pitch. At 120 qpm then 60 qpm from tick 480 (0.5 s), its notes are
/// 60 and 64 on 0–0.5 s (the second by running status), a zero-length 67 at
/// 0.5 s (dropped), 62 on 0.5–1.5 s and 62 again on 1.0–1.5 s (one note-off
/// closes both).
const TRICKY_MIDI: &[u8] = &[
    0x00, 0xff, 0x51, 0x03, 0x07, 0xa1, 0x20, // tempo 500000 µs per quarter
    0x00, 0x90, 60, 100, // note on 60
    0x00, 64, 100, // running status: note on 64
    0x83, 0x60, 60, 0, // tick 480: velocity 0 = note off 60
    0x00, 64, 0, // note off 64
    0x00, 0xff, 0x51, 0x03, 0x0f, 0x42, 0x40, // tempo 1000000 µs per quarter
    0x00, 0x90, 67, 100, // zero-length 67
    0x00, 0x80, 67, 64, //
    0x00, 0x90, 62, 100, // 62 at 0.5 s
    0x81, 0x70, 62, 90, // tick 720 (1.0 s): 62 again, overlapping
    0x81, 0x70, 0x80, 62, 64, // tick 960 (1.5 s): note off 62 closes both
    0x00, 0xff, 0x2f, 0x00,
];
const TRICKY_MIDI_NOTES: &str = "0\t0.5\t60\n0\t0.5\t64\n0.5\t1.5\t62\n1.0\t1.5\t62\n";

// ---------------------------------------------------------------------------
// Cases.

/// What a case must give.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    /// Exit code 2; one line naming `file` and containing `phrase`; the folder unchanged.
    Error { file: &'static str, phrase: &'static str },
    /// Exit code 0; `output` written (and nothing else) holding `notes`.
    Midi { output: &'static str, notes: Expected },
    /// Exit code 0 with `--json` output holding these numbers (JSON pointers).
    Json(&'static [(&'static str, f64)]),
}

#[derive(Debug, Clone, Copy)]
enum Expected {
    /// No note at all.
    Empty,
    /// The song's notes: pitch for pitch, onsets within two frames (40 ms).
    Song,
    /// The song's notes and more (pitch for pitch, onsets within 40 ms).
    SongAndMore,
    /// Some notes of the templates' pitches (the input is not the song).
    Any,
}

use Expected::*;
use Outcome::*;

struct Case {
    name: &'static str,
    /// Makes the inputs in the folder and returns the command line.
    make: fn(&Path) -> Vec<String>,
    outcome: Outcome,
}

fn arg(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

/// `transcribe <dir>/<input> --templates <templates> --threshold 0.25 --quiet <extra>`.
fn transcribe_with(dir: &Path, input: &str, templates: &Path, extra: &[&str]) -> Vec<String> {
    let mut v = vec!["transcribe".to_string(), arg(&dir.join(input)), "--templates".into(), arg(templates)];
    if !extra.contains(&"--threshold") {
        v.extend(["--threshold", THRESHOLD].iter().map(|s| s.to_string()));
    }
    v.push("--quiet".into());
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn transcribe(dir: &Path, input: &str, extra: &[&str]) -> Vec<String> {
    transcribe_with(dir, input, &shared().templates, extra)
}

/// The song transcribed with the templates file `name`, made by `make` from
/// the shared templates' bytes.
fn with_templates(dir: &Path, name: &str, bytes: Vec<u8>) -> Vec<String> {
    song_wav(dir, "song.wav");
    std::fs::write(dir.join(name), bytes).unwrap();
    transcribe_with(dir, "song.wav", &dir.join(name), &[])
}

/// `evaluate <dir>/ref <dir>/est --json`, both written from text.
fn evaluate(dir: &Path, reference: (&str, &[u8]), estimate: (&str, &[u8])) -> Vec<String> {
    std::fs::write(dir.join(reference.0), reference.1).unwrap();
    std::fs::write(dir.join(estimate.0), estimate.1).unwrap();
    ["evaluate".to_string(), arg(&dir.join(reference.0)), arg(&dir.join(estimate.0)), "--json".into()].to_vec()
}

fn write(path: PathBuf, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
}

const fn error(file: &'static str, phrase: &'static str) -> Outcome {
    Error { file, phrase }
}

const fn midi(output: &'static str, notes: Expected) -> Outcome {
    Midi { output, notes }
}

/// Every case; `tests/bad-inputs/README.md` lists them with their outcomes.
fn cases() -> Vec<Case> {
    vec![
        // --- Audio that cannot be read.
        Case {
            name: "empty file",
            make: |d| {
                write(d.join("empty.wav"), b"");
                transcribe(d, "empty.wav", &[])
            },
            outcome: error("empty.wav", "empty file"),
        },
        Case {
            name: "text file named .wav",
            make: |d| {
                write(d.join("text.wav"), b"these are words, not audio; a user renamed a file\n");
                transcribe(d, "text.wav", &[])
            },
            outcome: error("text.wav", "not a supported audio file"),
        },
        Case {
            name: "WAV truncated mid-header",
            make: |d| {
                let wav = std::fs::read(song_wav(d, "full.wav")).unwrap();
                std::fs::remove_file(d.join("full.wav")).unwrap();
                write(d.join("cut-header.wav"), &wav[..30]);
                transcribe(d, "cut-header.wav", &[])
            },
            outcome: error("cut-header.wav", "truncated inside its header"),
        },
        Case {
            name: "WAV truncated mid-data (inside a sample)",
            make: |d| {
                let wav = std::fs::read(song_wav(d, "full.wav")).unwrap();
                std::fs::remove_file(d.join("full.wav")).unwrap();
                // 1.5 s of the 2 s and one byte of the next sample.
                write(d.join("cut-data.wav"), &wav[..44 + 2 * 66150 + 1]);
                transcribe(d, "cut-data.wav", &[])
            },
            outcome: midi("cut-data.mid", SongAndMore),
        },
        Case {
            name: "WAV whose header claims more data than it has",
            make: |d| {
                write(d.join("claims-more.wav"), &common::raw_wav(1, 1, RATE, 16, 10 * 2 * RATE, &pcm16(&song(RATE))));
                transcribe(d, "claims-more.wav", &[])
            },
            outcome: midi("claims-more.mid", Song),
        },
        Case {
            name: "FLAC truncated mid-header",
            make: |d| {
                write(d.join("cut-header.flac"), &fixture("sine440-660-16bit-22050Hz-stereo-0.25s.flac")[..30]);
                transcribe(d, "cut-header.flac", &[])
            },
            outcome: error("cut-header.flac", "truncated inside its header"),
        },
        Case {
            name: "FLAC truncated mid-data",
            make: |d| {
                let flac = fixture("sine440-660-16bit-22050Hz-stereo-0.25s.flac");
                // Inside the second of its two frames (at 86 and 3937).
                write(d.join("cut-data.flac"), &flac[..5200]);
                transcribe(d, "cut-data.flac", &["--threshold", "0.01"])
            },
            outcome: midi("cut-data.mid", Any),
        },
        Case {
            name: "FLAC truncated inside its first frame",
            make: |d| {
                write(d.join("cut-frame.flac"), &fixture("sine440-660-16bit-22050Hz-stereo-0.25s.flac")[..3000]);
                transcribe(d, "cut-frame.flac", &[])
            },
            outcome: error("cut-frame.flac", "truncated: the file ends before its first complete block of audio"),
        },
        Case {
            name: "WAV with sample rate 0",
            make: |d| {
                write(d.join("rate0.wav"), &common::raw_wav(1, 1, 0, 16, 100, &[0; 100]));
                transcribe(d, "rate0.wav", &[])
            },
            outcome: error("rate0.wav", "corrupt WAV header: its sample rate 0 Hz is out of range"),
        },
        Case {
            name: "WAV with 0 channels",
            make: |d| {
                write(d.join("mono0.wav"), &common::raw_wav(1, 0, 22050, 16, 100, &[0; 100]));
                transcribe(d, "mono0.wav", &[])
            },
            outcome: error("mono0.wav", "corrupt WAV header: it declares 0 channels"),
        },
        Case {
            name: "WAV with 0 samples",
            make: |d| {
                write(d.join("no-samples.wav"), &common::raw_wav(1, 1, RATE, 16, 0, &[]));
                transcribe(d, "no-samples.wav", &[])
            },
            outcome: error("no-samples.wav", "contains no audio samples"),
        },
        Case {
            name: "fewer samples than one STFT window",
            make: |d| {
                common::write_wav(&d.join("short.wav"), RATE, &common::tone(RATE, 60, 1000.0 / f64::from(RATE)));
                transcribe(d, "short.wav", &[])
            },
            outcome: midi("short.mid", Any),
        },
        Case {
            name: "all-zero audio",
            make: |d| {
                common::write_wav(&d.join("silence.wav"), RATE, &vec![0.0; 2 * RATE as usize]);
                transcribe(d, "silence.wav", &[])
            },
            outcome: midi("silence.mid", Empty),
        },
        Case {
            name: "NaN in a float WAV",
            make: |d| {
                let mut s = song(RATE);
                s[RATE as usize / 2] = f32::NAN;
                hound_wav(&d.join("nan.wav"), RATE, 1, 32, true, &s);
                transcribe(d, "nan.wav", &[])
            },
            outcome: error("nan.wav", "non-finite samples (NaN or infinity) at 0.500 s"),
        },
        Case {
            name: "+inf in a float WAV",
            make: |d| {
                let mut s = song(RATE);
                s[RATE as usize] = f32::INFINITY;
                hound_wav(&d.join("inf.wav"), RATE, 1, 32, true, &s);
                transcribe(d, "inf.wav", &[])
            },
            outcome: error("inf.wav", "non-finite samples (NaN or infinity) at 1.000 s"),
        },
        Case {
            name: "-inf in a float WAV",
            make: |d| {
                let mut s = song(RATE);
                s[0] = f32::NEG_INFINITY;
                hound_wav(&d.join("neg-inf.wav"), RATE, 1, 32, true, &s);
                transcribe(d, "neg-inf.wav", &[])
            },
            outcome: error("neg-inf.wav", "non-finite samples (NaN or infinity) at 0.000 s"),
        },
        Case {
            name: "clipping full-scale square wave, 16-bit",
            make: |d| {
                hound_wav(&d.join("square16.wav"), RATE, 1, 16, false, &square(RATE, 1.0));
                transcribe(d, "square16.wav", &[])
            },
            outcome: midi("square16.mid", Any),
        },
        Case {
            name: "square wave far beyond full scale (±8), float",
            make: |d| {
                hound_wav(&d.join("square-float.wav"), RATE, 1, 32, true, &square(RATE, 8.0));
                transcribe(d, "square-float.wav", &[])
            },
            outcome: midi("square-float.mid", Any),
        },
        // --- Odd but valid audio: a transcription.
        Case {
            name: "8 kHz",
            make: |d| {
                common::write_wav(&d.join("rate8000.wav"), 8000, &song(8000));
                transcribe(d, "rate8000.wav", &[])
            },
            outcome: midi("rate8000.mid", Song),
        },
        Case {
            name: "22.05 kHz",
            make: |d| {
                common::write_wav(&d.join("rate22050.wav"), 22050, &song(22050));
                transcribe(d, "rate22050.wav", &[])
            },
            outcome: midi("rate22050.mid", Song),
        },
        Case {
            name: "48 kHz",
            make: |d| {
                common::write_wav(&d.join("rate48000.wav"), 48000, &song(48000));
                transcribe(d, "rate48000.wav", &[])
            },
            outcome: midi("rate48000.mid", Song),
        },
        Case {
            name: "96 kHz",
            make: |d| {
                common::write_wav(&d.join("rate96000.wav"), 96000, &song(96000));
                transcribe(d, "rate96000.wav", &[])
            },
            outcome: midi("rate96000.mid", Song),
        },
        Case {
            name: "2 channels",
            make: |d| {
                hound_wav(&d.join("stereo.wav"), RATE, 2, 16, false, &song(RATE));
                transcribe(d, "stereo.wav", &[])
            },
            outcome: midi("stereo.mid", Song),
        },
        Case {
            name: "6 channels",
            make: |d| {
                hound_wav(&d.join("six.wav"), RATE, 6, 16, false, &song(RATE));
                transcribe(d, "six.wav", &[])
            },
            outcome: midi("six.mid", Song),
        },
        Case {
            name: "6 channels, --channel 5",
            make: |d| {
                hound_wav(&d.join("six.wav"), RATE, 6, 16, false, &song(RATE));
                transcribe(d, "six.wav", &["--channel", "5"])
            },
            outcome: midi("six.mid", Song),
        },
        Case {
            name: "6 channels, --channel 6 (no such channel)",
            make: |d| {
                hound_wav(&d.join("six.wav"), RATE, 6, 16, false, &song(RATE));
                transcribe(d, "six.wav", &["--channel", "6"])
            },
            outcome: error("six.wav", "has no channel 6: it has 6 channels"),
        },
        Case {
            name: "8-bit integer",
            make: |d| {
                hound_wav(&d.join("int8.wav"), RATE, 1, 8, false, &song(RATE));
                transcribe(d, "int8.wav", &[])
            },
            outcome: midi("int8.mid", Song),
        },
        Case {
            name: "16-bit integer",
            make: |d| {
                hound_wav(&d.join("int16.wav"), RATE, 1, 16, false, &song(RATE));
                transcribe(d, "int16.wav", &[])
            },
            outcome: midi("int16.mid", Song),
        },
        Case {
            name: "24-bit integer",
            make: |d| {
                hound_wav(&d.join("int24.wav"), RATE, 1, 24, false, &song(RATE));
                transcribe(d, "int24.wav", &[])
            },
            outcome: midi("int24.mid", Song),
        },
        Case {
            name: "32-bit integer",
            make: |d| {
                hound_wav(&d.join("int32.wav"), RATE, 1, 32, false, &song(RATE));
                transcribe(d, "int32.wav", &[])
            },
            outcome: midi("int32.mid", Song),
        },
        Case {
            name: "32-bit float",
            make: |d| {
                hound_wav(&d.join("float32.wav"), RATE, 1, 32, true, &song(RATE));
                transcribe(d, "float32.wav", &[])
            },
            outcome: midi("float32.mid", Song),
        },
        Case {
            name: "64-bit float",
            make: |d| {
                let data: Vec<u8> = song(RATE).iter().flat_map(|&s| f64::from(s).to_le_bytes()).collect();
                write(d.join("float64.wav"), &common::raw_wav(3, 1, RATE, 64, data.len() as u32, &data));
                transcribe(d, "float64.wav", &[])
            },
            outcome: midi("float64.mid", Song),
        },
        Case {
            name: "WAV content with another extension",
            make: |d| {
                song_wav(d, "song.bin");
                transcribe(d, "song.bin", &[])
            },
            outcome: midi("song.mid", Song),
        },
        // --- Length limits.
        Case {
            name: "a 10-hour header over 2 s of data",
            make: |d| {
                let claimed = 10 * 3600 * 2 * RATE;
                write(d.join("ten-hours.wav"), &common::raw_wav(1, 1, RATE, 16, claimed, &pcm16(&song(RATE))));
                transcribe(d, "ten-hours.wav", &[])
            },
            outcome: midi("ten-hours.mid", Song),
        },
        Case {
            name: "a real 10-hour file (sparse): past the default --max-duration",
            make: |d| {
                let claimed = 10 * 3600 * 2 * RATE;
                let path = d.join("ten-hours.wav");
                write(path.clone(), &common::raw_wav(1, 1, RATE, 16, claimed, &pcm16(&song(RATE))));
                let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
                f.set_len(44 + u64::from(claimed)).unwrap();
                transcribe(d, "ten-hours.wav", &[])
            },
            outcome: error("ten-hours.wav", "longer than the maximum duration of 14400 s"),
        },
        Case {
            name: "--max-duration below the file's length",
            make: |d| {
                song_wav(d, "song.wav");
                transcribe(d, "song.wav", &["--max-duration", "1.5"])
            },
            outcome: error("song.wav", "longer than the maximum duration of 1.5 s; raise --max-duration"),
        },
        Case {
            name: "--offset past the end",
            make: |d| {
                song_wav(d, "song.wav");
                transcribe(d, "song.wav", &["--offset", "3"])
            },
            outcome: error("song.wav", "is at or past the end of the audio"),
        },
        Case {
            name: "missing input",
            make: |d| transcribe(d, "missing.wav", &[]),
            outcome: error("missing.wav", "no such file or directory"),
        },
        Case {
            name: "folder without audio",
            make: |d| {
                std::fs::create_dir(d.join("nothing")).unwrap();
                write(d.join("nothing/readme.txt"), b"no audio here");
                transcribe(d, "nothing", &[])
            },
            outcome: error("nothing", "no audio files"),
        },
        // --- Template files.
        Case {
            name: "templates: empty file",
            make: |d| with_templates(d, "empty.templates", Vec::new()),
            outcome: error("empty.templates", "empty file"),
        },
        Case {
            name: "templates: truncated",
            make: |d| {
                let b = template_bytes();
                with_templates(d, "cut.templates", b[..b.len() / 2].to_vec())
            },
            outcome: error("cut.templates", "not a valid templates file"),
        },
        Case {
            name: "templates: truncated inside the header",
            make: |d| with_templates(d, "cut-header.templates", template_bytes()[..100].to_vec()),
            outcome: error("cut-header.templates", "not a valid templates file"),
        },
        Case {
            name: "templates: bad header length",
            make: |d| {
                let mut b = template_bytes();
                b[..8].copy_from_slice(&u64::MAX.to_le_bytes());
                with_templates(d, "bad-length.templates", b)
            },
            outcome: error("bad-length.templates", "not a valid templates file"),
        },
        Case {
            name: "templates: header that is not JSON",
            make: |d| {
                let mut b = template_bytes();
                b[8] = b'#';
                with_templates(d, "bad-json.templates", b)
            },
            outcome: error("bad-json.templates", "not a valid templates file"),
        },
        Case {
            name: "templates: NaN inside",
            make: |d| {
                let mut b = template_bytes();
                let at = 8 + header_len(&b) + 2 * 4096 * 4 + 400;
                b[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
                with_templates(d, "nan.templates", b)
            },
            outcome: error("nan.templates", "negative or non-finite value (NaN)"),
        },
        Case {
            name: "templates: another sample rate (22.05 kHz, n_fft 4096)",
            make: |d| {
                song_wav(d, "song.wav");
                transcribe_with(d, "song.wav", &shared().templates_22050, &[])
            },
            outcome: midi("song.mid", Song),
        },
        Case {
            name: "templates: another FFT size (n_fft 4096, 44.1 kHz)",
            make: |d| {
                song_wav(d, "song.wav");
                transcribe_with(d, "song.wav", &shared().templates_fft4096, &[])
            },
            outcome: midi("song.mid", SongAndMore),
        },
        Case {
            name: "templates: metadata n_fft disagrees with the templates' shape",
            make: |d| with_templates(d, "lying.templates", replace(&template_bytes(), "\"8192\"", "\"4096\"")),
            outcome: error("lying.templates", "templates have 4097 frequency bins but n_fft = 4096 gives 2049"),
        },
        Case {
            name: "templates: another format version",
            make: |d| {
                with_templates(
                    d,
                    "v9.templates",
                    replace(&template_bytes(), "\"format_version\":\"1\"", "\"format_version\":\"9\""),
                )
            },
            outcome: error("v9.templates", "format version 9 is not supported"),
        },
        Case {
            name: "templates: no notes",
            make: |d| with_templates(d, "none.templates", no_templates()),
            outcome: error("none.templates", "the file holds no templates"),
        },
        Case {
            name: "templates: an audio file",
            make: |d| {
                let wav = std::fs::read(song_wav(d, "other.wav")).unwrap();
                with_templates(d, "audio.templates", wav)
            },
            outcome: error("audio.templates", "not a valid templates file"),
        },
        Case {
            name: "templates: missing",
            make: |d| {
                song_wav(d, "song.wav");
                transcribe_with(d, "song.wav", &d.join("missing.templates"), &[])
            },
            outcome: error("missing.templates", "no such file or directory"),
        },
        // --- Note lists.
        Case {
            name: "MIDI reference: zero-length and overlapping notes, tempo change, running status",
            make: |d| evaluate(d, ("tricky.mid", &smf(TRICKY_MIDI)), ("notes.txt", TRICKY_MIDI_NOTES.as_bytes())),
            outcome: Json(&[("/n_reference", 4.0), ("/n_estimate", 4.0), ("/onset_offset/f_measure", 1.0)]),
        },
        Case {
            name: "MIDI reference truncated",
            make: |d| {
                let b = smf(TRICKY_MIDI);
                evaluate(d, ("cut.mid", &b[..b.len() - 10]), ("notes.txt", TRICKY_MIDI_NOTES.as_bytes()))
            },
            outcome: error("cut.mid", "MIDI"),
        },
        Case {
            name: "MAPS txt with blank lines, Windows line endings and extra columns",
            make: |d| {
                let txt = b"OnsetTime\tOffsetTime\tMidiPitch\r\n\r\n0.5\t1.0\t60\t1\textra\r\n\r\n   \r\n1.0\t1.5\t64\t2\r\n2.0 2.5 67\r\n";
                let csv = b"start_time_s,end_time_s,pitch_midi,velocity\n0.5,1.0,60,80\n1.0,1.5,64,80\n2.0,2.5,67,80\n";
                evaluate(d, ("ref.txt", txt), ("est.csv", csv))
            },
            outcome: Json(&[("/n_reference", 3.0), ("/onset/f_measure", 1.0), ("/onset_offset/f_measure", 1.0)]),
        },
        Case {
            name: "MAPS txt with an offset before its onset",
            make: |d| {
                evaluate(
                    d,
                    ("bad.txt", b"OnsetTime\tOffsetTime\tMidiPitch\n0.5\t1.0\t60\n2.0\t1.5\t64\n"),
                    ("e.txt", b""),
                )
            },
            outcome: error("bad.txt", "line 3"),
        },
        // --- Outputs.
        Case {
            name: "output in a missing folder",
            make: |d| {
                song_wav(d, "song.wav");
                transcribe(d, "song.wav", &["-o", &arg(&d.join("missing/out.mid"))])
            },
            outcome: error("out.mid", "folder does not exist"),
        },
        Case {
            name: "output under a file, not a folder",
            make: |d| {
                song_wav(d, "song.wav");
                transcribe(d, "song.wav", &["-o", &arg(&d.join("song.wav/out.mid"))])
            },
            outcome: error("out.mid", "is not a folder"),
        },
        Case {
            name: "output is the input",
            make: |d| {
                song_wav(d, "song.wav");
                transcribe(d, "song.wav", &["-o", &arg(&d.join("./song.wav"))])
            },
            outcome: error("song.wav", "output would overwrite an input file"),
        },
        Case {
            name: "output is a symbolic link to the input",
            make: |d| {
                song_wav(d, "song.wav");
                std::os::unix::fs::symlink(d.join("song.wav"), d.join("link.mid")).unwrap();
                transcribe(d, "song.wav", &["-o", &arg(&d.join("link.mid")), "--overwrite"])
            },
            outcome: error("link.mid", "output would overwrite an input file"),
        },
        Case {
            name: "output exists",
            make: |d| {
                song_wav(d, "song.wav");
                write(d.join("song.mid"), b"precious");
                transcribe(d, "song.wav", &[])
            },
            outcome: error("song.mid", "already exists (use --overwrite to replace it)"),
        },
        Case {
            name: "two inputs that would write the same output",
            make: |d| {
                song_wav(d, "song.wav");
                song_wav(d, "song.bin");
                let mut args = transcribe(d, "song.wav", &["-o", &arg(d)]);
                args.insert(2, arg(&d.join("song.bin")));
                args
            },
            outcome: error("song.mid", "is the output of both"),
        },
    ]
}

/// A templates file of the right format holding no template.
fn no_templates() -> Vec<u8> {
    let mut d = TemplateDictionary::from_bytes(&template_bytes()).unwrap();
    d.pitches.clear();
    d.templates.n_templates = 0;
    d.templates.data.clear();
    d.to_bytes().unwrap()
}

// ---------------------------------------------------------------------------
// Running and checking.

/// Every file under `dir`, relative to it.
fn files_under(dir: &Path) -> BTreeSet<PathBuf> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() && !p.is_symlink() {
                walk(root, &p, out);
            } else {
                out.insert(p.strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

fn run(args: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sscnmf")).args(args).env("RUST_BACKTRACE", "1").output().expect("runs")
}

/// The song's notes, or what is wrong with `notes`.
fn check_notes(notes: &[Note], expected: Expected) -> Result<(), String> {
    for w in notes.windows(2) {
        if (w[0].onset, w[0].pitch) > (w[1].onset, w[1].pitch) {
            return Err(format!("notes not sorted: {w:?}"));
        }
    }
    if let Some(n) = notes.iter().find(|n| n.offset <= n.onset || !PITCHES.contains(&n.pitch)) {
        return Err(format!("bad note {n:?}"));
    }
    let got: Vec<(f64, u8)> = notes.iter().map(|n| (n.onset, n.pitch)).collect();
    let ok = match expected {
        Empty => got.is_empty(),
        Any => !got.is_empty(),
        SongAndMore => SONG.iter().all(|&(et, ep)| got.iter().any(|&(t, p)| p == ep && (t - et).abs() <= 0.04 + 1e-9)),
        Song => {
            got.len() == SONG.len()
                && got.iter().zip(SONG).all(|(&(t, p), (et, ep))| p == ep && (t - et).abs() <= 0.04 + 1e-9)
        }
    };
    if ok {
        Ok(())
    } else {
        Err(format!("expected {expected:?} ({SONG:?}), got {got:?}"))
    }
}

/// Runs `case`; the list of what is wrong with its outcome.
fn check(case: &Case) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let args = (case.make)(d);
    let before = files_under(d);
    let o = run(&args);
    let after = files_under(d);
    let (stdout, stderr) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    let mut problems = Vec::new();
    for bad in ["panicked", "RUST_BACKTRACE", "stack backtrace"] {
        if stderr.contains(bad) {
            problems.push(format!("stderr has `{bad}`"));
        }
    }
    match case.outcome {
        Error { file, phrase } => {
            if o.status.code() != Some(2) {
                problems.push(format!("exit code {:?}, expected 2", o.status.code()));
            }
            let line = stderr.trim_end();
            if line.lines().count() != 1 || !line.starts_with("error: ") {
                problems.push("stderr is not one `error: ` line".into());
            }
            if !line.contains(file) || !line.contains(phrase) {
                problems.push(format!("stderr does not name `{file}` or say `{phrase}`"));
            }
            if after != before {
                problems.push(format!("files changed: {:?}", after.symmetric_difference(&before).collect::<Vec<_>>()));
            }
        }
        Midi { output, notes } => {
            if o.status.code() != Some(0) {
                problems.push(format!("exit code {:?}, expected 0", o.status.code()));
            }
            let mut expected = before.clone();
            expected.insert(PathBuf::from(output));
            if after != expected {
                problems.push(format!("files written: {:?}", after.difference(&before).collect::<Vec<_>>()));
            }
            match read_notes(&d.join(output)) {
                Ok(n) => problems.extend(check_notes(&n, notes).err()),
                Err(e) => problems.push(format!("output unreadable: {e}")),
            }
        }
        Json(checks) => {
            if o.status.code() != Some(0) {
                problems.push(format!("exit code {:?}, expected 0", o.status.code()));
            }
            match serde_json::from_str::<serde_json::Value>(&stdout) {
                Ok(v) => {
                    for &(pointer, value) in checks {
                        let got = v.pointer(pointer).and_then(|x| x.as_f64());
                        if got.is_none_or(|g| (g - value).abs() > 1e-9) {
                            problems.push(format!("{pointer} = {got:?}, expected {value}"));
                        }
                    }
                }
                Err(e) => problems.push(format!("stdout is not JSON ({e}): {stdout}")),
            }
            if after != before {
                problems.push("files changed".into());
            }
        }
    }
    if !problems.is_empty() {
        problems.insert(0, format!("stderr: {}", stderr.trim_end()));
    }
    problems
}

#[test]
fn every_bad_input_has_its_exact_outcome() {
    shared();
    let mut failures = Vec::new();
    let cases = cases();
    for case in &cases {
        let problems = check(case);
        if !problems.is_empty() {
            failures.push(format!("{}:\n    {}", case.name, problems.join("\n    ")));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

/// The README of the corpus lists every case by name.
#[test]
fn the_catalogue_lists_every_case() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad-inputs/README.md")).unwrap();
    let missing: Vec<&str> = cases().iter().map(|c| c.name).filter(|n| !readme.contains(&format!("| {n} |"))).collect();
    assert!(missing.is_empty(), "not in tests/bad-inputs/README.md: {missing:?}");
}

/// An output folder the user may not write to: refused before any work,
/// naming the output. Permissions do not bind root, so as root the binary
/// runs as `nobody` (setpriv).
#[test]
fn output_in_a_read_only_folder() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    song_wav(d, "song.wav");
    let ro = d.join("read-only");
    std::fs::create_dir(&ro).unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
    let args = transcribe(d, "song.wav", &["-o", &arg(&ro.join("out.mid"))]);
    let is_root = std::fs::File::create(ro.join("probe")).is_ok();
    let o = if is_root {
        std::fs::remove_file(ro.join("probe")).unwrap();
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", env!("CARGO_BIN_EXE_sscnmf")])
            .args(&args)
            .output()
            .expect("setpriv runs")
    } else {
        run(&args)
    };
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("out.mid") && stderr.contains("permission denied"), "{stderr}");
    assert_eq!(std::fs::read_dir(&ro).unwrap().count(), 0);
}

/// Ctrl-C in the middle of a batch: the process ends with code 130, every
/// output it finished is whole, none is partial and no temporary file is
/// left; a re-run with `--skip-existing` does only the rest.
#[test]
fn an_interrupted_batch_leaves_whole_outputs_and_a_rerun_continues() {
    let dir = tempfile::tempdir().unwrap();
    let (songs, out) = (dir.path().join("songs"), dir.path().join("out"));
    std::fs::create_dir_all(&songs).unwrap();
    std::fs::create_dir_all(&out).unwrap();
    let long: Vec<f32> = (0..4).flat_map(|_| song(RATE)).collect();
    for i in 0..6 {
        common::write_wav(&songs.join(format!("song{i}.wav")), RATE, &long);
    }
    let mut args = transcribe(&songs, "", &["-o", &arg(&out)]);
    args[1] = arg(&songs);
    let mut child =
        Command::new(env!("CARGO_BIN_EXE_sscnmf")).args(&args).stderr(std::process::Stdio::piped()).spawn().unwrap();
    // Wait for the first output (not a temporary file being written: it
    // can be seen while it is flushed to disk), then interrupt.
    let finished = |out: &Path| {
        std::fs::read_dir(out)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "mid"))
            .count()
    };
    while finished(&out) == 0 {
        assert!(child.try_wait().unwrap().is_none(), "the batch ended before any output");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let kill = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let o = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    let done = files_under(&out);
    assert!(!done.is_empty() && done.len() < 6, "{done:?}");
    let mut before = Vec::new();
    for f in &done {
        let name = f.to_str().unwrap();
        assert!(name.starts_with("song") && name.ends_with(".mid"), "unexpected file {name}");
        let bytes = std::fs::read(out.join(f)).unwrap();
        let notes = sscnmf::notes::parse_midi(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(notes.len(), 4 * SONG.len(), "{name}");
        before.push((f.clone(), bytes));
    }

    args.push("--skip-existing".into());
    let o = run(&args);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(files_under(&out).len(), 6);
    for (f, bytes) in before {
        assert_eq!(std::fs::read(out.join(&f)).unwrap(), bytes, "{f:?} was redone");
    }
}
