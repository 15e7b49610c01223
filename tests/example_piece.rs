//! The README's first command: the example piece in `examples/`, transcribed
//! with the built-in dictionary through the CLI, scores at least what was
//! measured when the example was made (onset F 72.0 %) minus two points.

use std::path::Path;
use std::process::Command;

use sscnmf::evaluation::evaluate;
use sscnmf::notes::read_notes;

#[test]
fn example_piece_transcribes_with_the_builtin_piano() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bach.mid");
    let o = Command::new(env!("CARGO_BIN_EXE_sscnmf"))
        .args(["transcribe", "-q", "-o"])
        .arg(&out)
        .arg(root.join("examples/bach-prelude-c.flac"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let reference = read_notes(&root.join("examples/bach-prelude-c.reference.mid")).unwrap();
    assert_eq!(reference.len(), 128);
    let scores = evaluate(&reference, &read_notes(&out).unwrap(), 0.05, 0.2);
    assert!(scores.onset.f_measure >= 0.70, "onset F {:.3} below 0.70", scores.onset.f_measure);
}

/// `--faithful` (the paper's iterations in f32) writes the same notes as
/// `--exact` (f64, dense) on the first 10 s of the example piece, and
/// `--faithful` and `--exact` together are refused. The same pitches and
/// onsets are required; offsets and velocities may flip on at most one note
/// (by one frame, by one velocity step), because the f32 sums of the AVX-512,
/// AVX2 and portable kernels round differently (on the AVX-512 hosts of
/// BENCHMARKS.md all 36 dev songs and this excerpt are byte-identical).
#[test]
fn the_faithful_path_writes_the_exact_paths_notes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let run = |flags: &[&str], name: &str| {
        let out = dir.path().join(name);
        let o = Command::new(env!("CARGO_BIN_EXE_sscnmf"))
            .args(["transcribe", "-q", "--duration", "10", "-o"])
            .arg(&out)
            .args(flags)
            .arg(root.join("examples/bach-prelude-c.flac"))
            .output()
            .unwrap();
        (o, out)
    };
    let (o, faithful) = run(&["--faithful"], "faithful.mid");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (o, exact) = run(&["--exact"], "exact.mid");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (faithful, exact) = (read_notes(&faithful).unwrap(), read_notes(&exact).unwrap());
    assert!(faithful.len() > 20, "too few notes to compare: {}", faithful.len());
    let key = |n: &sscnmf::notes::Note| (n.pitch, (n.onset * 1e4).round() as i64);
    assert_eq!(faithful.iter().map(key).collect::<Vec<_>>(), exact.iter().map(key).collect::<Vec<_>>());
    let frame = 0.02 + 1e-9;
    let differing = faithful.iter().zip(&exact).filter(|(a, b)| a != b).collect::<Vec<_>>();
    assert!(differing.len() <= 1, "{} notes differ: {differing:?}", differing.len());
    for (a, b) in differing {
        assert!((a.offset - b.offset).abs() <= frame && a.velocity.abs_diff(b.velocity) <= 1, "{a:?} vs {b:?}");
    }
    let (o, both) = run(&["--faithful", "--exact"], "both.mid");
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!both.exists());
}
