//! Writes the opening of J. S. Bach's Prelude in C major, BWV 846 (The
//! Well-Tempered Clavier I; the score is public domain), as a MIDI file, and
//! renders it through a SoundFont to a mono 16-bit WAV (peak −1 dBFS): the example piece in
//! `examples/` (`scripts/make-example-piece.sh` runs this and encodes FLAC).
//!
//! ```sh
//! cargo run --release --example render_piece -- SOUNDFONT.sf2 OUT.mid OUT.wav
//! ```
//!
//! The notes were written by hand from the score, bars 1-8: each half bar
//! plays its chord's two lowest notes held (a half note, and a tied note from
//! the second sixteenth) and its three upper notes as sixteenths, twice.
//! Tempo 72 quarter notes per minute, the first note at 0.5 s, sixteenths held
//! 90 % of their length, held notes 95 %, velocities 60-78 by position.

use std::path::Path;

use sscnmf::notes::{write_notes, Note, NoteFormat};
use sscnmf::soundfont::{LoadedSoundFont, Preset};

/// Bars 1-8 of BWV 846: the five notes of each bar's chord, low to high.
const BARS: [[u8; 5]; 8] = [
    [60, 64, 67, 72, 76], // C E G C E
    [60, 62, 69, 74, 77], // C D A D F
    [59, 62, 67, 74, 77], // B D G D F
    [60, 64, 67, 72, 76], // C E G C E
    [60, 64, 69, 76, 81], // C E A E A
    [60, 62, 66, 69, 74], // C D F# A D
    [59, 62, 67, 74, 79], // B D G D G
    [59, 60, 64, 67, 72], // B C E G C
];

fn notes() -> Vec<Note> {
    let sixteenth = 60.0 / 72.0 / 4.0;
    let start = 0.5;
    let mut notes = Vec::new();
    for (b, chord) in BARS.iter().enumerate() {
        for half in 0..2 {
            let at = |k: usize| start + sixteenth * (16 * b + 8 * half + k) as f64;
            let mut add = |k: usize, len: f64, pitch: u8, velocity: u8| {
                notes.push(Note { onset: at(k), offset: at(k) + len * sixteenth, pitch, velocity });
            };
            add(0, 8.0 * 0.95, chord[0], 72);
            add(1, 7.0 * 0.95, chord[1], 64);
            for (j, k) in (2..8).enumerate() {
                let velocity = [70, 62, 66, 68, 60, 64][j] + if half == 0 { 6 } else { 0 };
                add(k, 0.9, chord[2 + j % 3], velocity);
            }
        }
    }
    notes
}

fn main() -> sscnmf::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 3 {
        eprintln!("usage: render_piece SOUNDFONT.sf2 OUT.mid OUT.wav");
        std::process::exit(2);
    }
    let notes = notes();
    write_notes(Path::new(&args[1]), &notes, NoteFormat::Midi)?;
    let sound_font = LoadedSoundFont::load(Path::new(&args[0]))?;
    let rate = 44_100;
    let end = notes.iter().map(|n| n.offset).fold(0.0, f64::max) + 1.5;
    let samples = sound_font.render(Preset::default(), &notes, rate, end)?;
    sscnmf::synth::write_wav(Path::new(&args[2]), &samples, rate)?;
    eprintln!("{} notes, {end:.1} s, preset 0:0 {:?}", notes.len(), sound_font.preset_name(Preset::default())?);
    Ok(())
}
