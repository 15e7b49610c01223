//! `sscnmf plot`, `transcribe --plot` and `sscnmf decompose` as a user runs
//! them: the pictures exist, are valid PNG or SVG of the stated size and a
//! sensible weight, outputs that cannot be written are refused before any
//! work, and the decompositions find what a synthetic excerpt holds.

use std::path::{Path, PathBuf};
use std::process::Output;

mod common;
use common::{sscnmf, tone, write_wav};

fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(name).display().to_string()
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "stderr: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Exit code 2 and one line `error: ...` naming `needle`.
fn assert_input_error(o: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "stderr: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line expected: {err}");
    assert!(err.starts_with("error: ") && err.contains(needle), "`{needle}` not in: {err}");
}

/// The PNG's width and height, after checking its signature and header.
fn png_size(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{}: not a PNG", path.display());
    assert_eq!(&bytes[12..16], b"IHDR");
    let be = |b: &[u8]| u32::from_be_bytes(b.try_into().unwrap());
    assert!(bytes.ends_with(&[0xAE, 0x42, 0x60, 0x82]), "ends with IEND's CRC");
    (be(&bytes[16..20]), be(&bytes[20..24]))
}

/// Checks an SVG's root element and, when `has_image`, that it embeds a
/// PNG with a proper media type; returns its text.
fn check_svg(path: &Path, has_image: bool) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.starts_with("<svg ") && text.contains("xmlns=\"http://www.w3.org/2000/svg\""), "{}", &text[..80]);
    assert!(text.trim_end().ends_with("</svg>"));
    assert_eq!(text.contains("href=\"data:image/png;base64,iVBORw0KGgo"), has_image);
    assert!(!text.contains("data:png;"));
    text
}

fn kb(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len() / 1024
}

#[test]
fn every_picture_of_the_example_renders_as_png_and_svg() {
    let dir = tempfile::tempdir().unwrap();
    let out = |name: &str| dir.path().join(name);
    let (audio, reference) = (example("bach-prelude-c.flac"), example("bach-prelude-c.reference.mid"));
    let p = |name: &str| out(name).display().to_string();

    ok(&sscnmf(&["plot", "spectrogram", &audio, "-o", &p("s.png"), "--duration", "4"]));
    assert_eq!(png_size(&out("s.png")), (1200, 560));
    assert!((20..400).contains(&kb(&out("s.png"))), "{} KB", kb(&out("s.png")));
    ok(&sscnmf(&["plot", "spectrogram", &audio, "-o", &p("s.svg"), "--duration", "4", "--fmax", "5000"]));
    let svg = check_svg(&out("s.svg"), true);
    assert!(svg.contains("time (s)") && svg.contains("frequency (Hz)") && svg.contains(">\n5k\n<"), "axes labelled");

    ok(&sscnmf(&["plot", "templates", "-o", &p("all.png")]));
    assert_eq!(png_size(&out("all.png")), (1200, 620));
    ok(&sscnmf(&["plot", "templates", "--notes", "36,60,84", "-o", &p("grid.svg")]));
    let svg = check_svg(&out("grid.svg"), true);
    assert!(svg.contains("C2 (MIDI 36)") && svg.contains("C4 (MIDI 60)") && svg.contains("C6 (MIDI 84)"));

    let args = ["--duration", "4", "--reference", &reference];
    ok(&sscnmf(&[&["plot", "activations", &audio, "-o", &p("a.png"), "--pitches", "60,64"][..], &args].concat()));
    assert_eq!(png_size(&out("a.png")), (1200, 60 + 2 * 170));
    ok(&sscnmf(&[&["plot", "activations", &audio, "-o", &p("a.svg")][..], &args].concat()));
    let svg = check_svg(&out("a.svg"), false);
    assert!(svg.contains("reference onset") && svg.contains("threshold s + δ"), "legend");
    assert_eq!(svg.matches("notes detected").count(), 4, "4 panels by default");

    ok(&sscnmf(&["plot", "roll", &audio, "--reference", &reference, "-o", &p("r.png"), "--duration", "4"]));
    assert_eq!(png_size(&out("r.png")), (1200, 640));
    // From a note list: the reference against itself is all hits.
    ok(&sscnmf(&["plot", "roll", &reference, "--reference", &reference, "-o", &p("r.svg")]));
    let svg = check_svg(&out("r.svg"), false);
    assert!(svg.contains("hit (128)") && !svg.contains("missed (") && !svg.contains("false note ("), "legend");
    assert!(svg.contains("F 100.0%"));
    for name in ["s.png", "all.png", "a.png", "r.png"] {
        assert!(kb(&out(name)) < 400, "{name}: {} KB", kb(&out(name)));
    }
}

#[test]
fn outputs_that_cannot_be_written_are_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let audio = example("bach-prelude-c.flac");
    let missing = dir.path().join("no/such/folder/x.png").display().to_string();
    assert_input_error(&sscnmf(&["plot", "spectrogram", &audio, "-o", &missing]), "x.png");
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let under_file = file.join("x.png").display().to_string();
    assert_input_error(&sscnmf(&["plot", "templates", "-o", &under_file]), "x.png");
    let jpg = dir.path().join("x.jpg").display().to_string();
    assert_input_error(&sscnmf(&["plot", "templates", "-o", &jpg]), "x.jpg");
    let existing = dir.path().join("old.png");
    std::fs::write(&existing, b"old").unwrap();
    let existing_s = existing.display().to_string();
    assert_input_error(&sscnmf(&["plot", "templates", "-o", &existing_s]), "--overwrite");
    assert_eq!(std::fs::read(&existing).unwrap(), b"old");
    ok(&sscnmf(&["plot", "templates", "-o", &existing_s, "--overwrite"]));
    png_size(&existing);
    // Bad input after the checks: still one line, nothing written.
    let out = dir.path().join("p.png").display().to_string();
    assert_input_error(&sscnmf(&["plot", "templates", "--notes", "200", "-o", &out]), "200");
    assert_input_error(
        &sscnmf(&["plot", "activations", &audio, "--pitches", "10", "--duration", "1", "-o", &out]),
        "10",
    );
    assert!(!Path::new(&out).exists());
    let missing_decompose = dir.path().join("none/f.safetensors").display().to_string();
    assert_input_error(&sscnmf(&["decompose", &audio, "--end", "1", "-o", &missing_decompose]), "f.safetensors");
    // Nothing but the files made on purpose is left behind.
    let mut left: Vec<PathBuf> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()).collect();
    left.sort();
    assert_eq!(left, vec![file, existing]);
}

#[test]
fn transcribe_plot_writes_the_roll_beside_the_midi() {
    let dir = tempfile::tempdir().unwrap();
    let midi = dir.path().join("bach.mid");
    let args = ["transcribe", "-q", "--plot", "--duration", "3", &example("bach-prelude-c.flac"), "-o"];
    ok(&sscnmf(&[&args[..], &[midi.to_str().unwrap()]].concat()));
    assert!(midi.is_file());
    assert_eq!(png_size(&dir.path().join("bach.png")), (1200, 640));
    // The picture counts as an output: it is not silently replaced.
    let o = sscnmf(&[&args[..], &[midi.to_str().unwrap()]].concat());
    assert_input_error(&o, "--overwrite");
}

/// Two tones one after the other, then both: a blind NMF of rank 2 finds
/// them, ordered by pitch, and writes factors of the right shapes.
#[test]
fn decompose_finds_two_synthetic_notes_in_pitch_order() {
    let dir = tempfile::tempdir().unwrap();
    let rate = 44100;
    let (a, b) = (tone(rate, 69, 1.0), tone(rate, 76, 1.0));
    let mut samples = b.clone();
    samples.extend(&a);
    samples.extend(a.iter().zip(&b).map(|(x, y)| x + y));
    let wav = dir.path().join("two.wav");
    write_wav(&wav, rate, &samples);
    let wav = wav.display().to_string();
    let factors = dir.path().join("f.safetensors");
    let picture = dir.path().join("f.png");
    let nmf = ["decompose", &wav, "--model", "nmf", "--rank", "2", "--iterations", "150", "-o"];
    let o = sscnmf(&[&nmf[..], &[factors.to_str().unwrap(), "--plot", picture.to_str().unwrap(), "--json"]].concat());
    let v: serde_json::Value = serde_json::from_str(ok(&o).trim()).unwrap();
    let pitches: Vec<f64> = v["components"].as_array().unwrap().iter().map(|c| c["pitch"].as_f64().unwrap()).collect();
    assert_eq!(pitches, vec![69.0, 76.0], "{v}");
    assert!(v["kl_divergence"].as_f64().unwrap() < 0.05 * v["initial_kl_divergence"].as_f64().unwrap(), "{v}");
    assert!(v["relative_frobenius_error"].as_f64().unwrap() < 0.4, "{v}");
    let bytes = std::fs::read(&factors).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let frames = v["frames"].as_u64().unwrap() as usize;
    assert_eq!(st.tensor("W").unwrap().shape(), &[2, 1, 4097]);
    assert_eq!(st.tensor("H").unwrap().shape(), &[2, frames]);
    assert_eq!(st.tensor("W").unwrap().dtype(), safetensors::Dtype::F64);
    assert_eq!(png_size(&picture), (1200, 620));
    // The same seed gives the same bytes.
    let again = dir.path().join("g.safetensors");
    ok(&sscnmf(&[&nmf[..], &[again.to_str().unwrap()]].concat()));
    assert_eq!(std::fs::read(&again).unwrap(), bytes);

    // CNMF on the excerpt with both tones; rank one of a single tone.
    let o =
        sscnmf(&["decompose", &wav, "--model", "cnmf", "--rank", "2", "--tau", "5", "--iterations", "60", "--json"]);
    let v: serde_json::Value = serde_json::from_str(ok(&o).trim()).unwrap();
    assert_eq!(v["tau"], 5);
    let one = dir.path().join("one.safetensors");
    let o = sscnmf(&["decompose", &wav, "--model", "rank-one", "--end", "1", "--json", "-o", one.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_str(ok(&o).trim()).unwrap();
    assert_eq!(v["kl"]["pitch"], 76.0);
    assert_eq!(v["frobenius"]["pitch"], 76.0);
    // Each is the best in its own sense.
    assert!(v["kl"]["kl_divergence"].as_f64() <= v["frobenius"]["kl_divergence"].as_f64(), "{v}");
    assert!(v["frobenius"]["relative_frobenius_error"].as_f64() <= v["kl"]["relative_frobenius_error"].as_f64(), "{v}");
    let bytes = std::fs::read(&one).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("w_kl").unwrap().shape(), &[4097]);
    assert_eq!(st.tensor("h_frobenius").unwrap().shape(), &[v["frames"].as_u64().unwrap() as usize]);
    // Human-readable output names the pitches.
    let text = ok(&sscnmf(&["decompose", &wav, "--model", "nmf", "--rank", "2", "--iterations", "50"]));
    assert!(text.contains("A4") && text.contains("E5") && text.contains("relative Frobenius error"), "{text}");
}
