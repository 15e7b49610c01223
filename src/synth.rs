//! Turning notes back into sound, so that a transcription can be listened
//! to: a small additive piano ([`AdditivePiano`]) that needs nothing but
//! this crate, or a SoundFont through rustysynth
//! ([`LoadedSoundFont::render`]), both behind [`Renderer`]; and a mono
//! 16-bit WAV writer ([`write_wav`], [`write_rendering`]) that streams, so
//! memory stays bounded however long the notes last.
//!
//! # The additive piano
//!
//! A note of MIDI pitch p and velocity v, struck at t₀ and released at t₁,
//! is a sum of partials n = 1, 2, … (those below 0.45 × the sample rate,
//! at most [`AdditivePiano::partials`]):
//!
//! x(t) = A(v) · e(t) · Σₙ aₙ · exp(−σₙ·(t − t₀)) · sin(2π·fₙ·(t − t₀))
//!
//! - fₙ = n·f₀·√(1 + B·n²), f₀ = 440 · 2^((p − 69)/12): the partials of a
//!   stiff string (Fletcher, "Normal vibration frequencies of a stiff piano
//!   string", JASA 1964), stretched above the harmonics. The inharmonicity
//!   B(p) = B₆₀ · 10^((p − 60)/48) is 10⁻⁴ at middle C and grows ten times
//!   every four octaves, the trend of real pianos (not a fit to one).
//! - aₙ = 1/n.
//! - σₙ = b₁ + b₃·fₙ² (in s⁻¹): frequency-dependent damping as in the string
//!   model of Chaigne & Askenfelt ("Numerical simulations of piano strings",
//!   JASA 1994), so each partial decays exponentially and the higher ones
//!   faster (defaults b₁ = 0.5 s⁻¹, b₃ = 1.2·10⁻⁶ s: 1/σ is 1.7 s at middle
//!   C, 0.6 s at 1 kHz, 46 ms at 4 kHz).
//! - A(v) = (v/127)²: the 40·log₁₀(v/127) dB velocity curve that General
//!   MIDI recommends.
//! - e(t) rises linearly from 0 to 1 in [`AdditivePiano::attack`] seconds,
//!   stays 1 while the key is held, and after the release at t₁ falls as
//!   exp(−ln(10⁴)·(t − t₁)/r) for r = [`AdditivePiano::release`] seconds
//!   (−80 dB at its end, where the note stops).
//!
//! Times are rounded to the sample. There is no pedal, no sympathetic
//! resonance and no hammer noise: the point is to hear which notes a
//! transcription holds, and when, not to sound like a piano.
//!
//! # Determinism
//!
//! The output is computed in blocks of [`BLOCK`] samples in parallel; each
//! block sums its notes in their order and starts each partial's oscillator
//! from its closed form at the block's first sample, so the samples do not
//! depend on the number of threads.

use std::path::Path;

use rayon::prelude::*;

use crate::notes::Note;
use crate::soundfont::{collect_samples, LoadedSoundFont, Preset, RENDER_BLOCK};
use crate::{Error, Result};

/// Samples per block of the parallel rendering.
pub const BLOCK: usize = 4096;

/// Seconds rendered after the last note's release with a SoundFont: long
/// enough for a piano's release (MAPS's isolated notes leave 1 s).
pub const SOUNDFONT_TAIL_SECONDS: f64 = 1.0;

/// Peak level of the WAV files written by [`write_wav`]: −1 dBFS.
pub const WAV_PEAK: f32 = 0.891;

/// The additive piano of the [module documentation](self); its fields are
/// the model's constants.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdditivePiano {
    /// Most partials per note. Default 16.
    pub partials: usize,
    /// B₆₀, the inharmonicity at middle C. Default 1e-4.
    pub inharmonicity: f64,
    /// b₁, the damping of every partial (s⁻¹). Default 0.5.
    pub damping: f64,
    /// b₃, the damping growing with the partial's frequency squared (s).
    /// Default 1.2e-6.
    pub damping_per_hz2: f64,
    /// Attack time (s). Default 0.003.
    pub attack: f64,
    /// Release time after the key is let go (s), to −80 dB. Default 0.25.
    pub release: f64,
}

impl Default for AdditivePiano {
    fn default() -> Self {
        AdditivePiano {
            partials: 16,
            inharmonicity: 1e-4,
            damping: 0.5,
            damping_per_hz2: 1.2e-6,
            attack: 0.003,
            release: 0.25,
        }
    }
}

/// One partial of one note, per sample: ω = 2π·fₙ/rate (rad), σₙ/rate and
/// the amplitude aₙ.
#[derive(Debug, Clone, Copy)]
struct Partial {
    omega: f64,
    sigma: f64,
    amplitude: f64,
}

/// A note in samples: from `start` (the strike) to `off` (the release) and
/// `end` (silent from there).
#[derive(Debug, Clone)]
struct Voice {
    start: usize,
    off: usize,
    end: usize,
    gain: f64,
    partials: Vec<Partial>,
}

impl AdditivePiano {
    /// fₙ in Hz for pitch `pitch`, n = 1 ..= `partials` (before the
    /// Nyquist cut).
    pub fn partial_frequencies(&self, pitch: u8) -> Vec<f64> {
        let f0 = 440.0 * 2f64.powf((f64::from(pitch) - 69.0) / 12.0);
        let b = self.inharmonicity * 10f64.powf((f64::from(pitch) - 60.0) / 48.0);
        (1..=self.partials).map(|n| n as f64 * f0 * (1.0 + b * (n * n) as f64).sqrt()).collect()
    }

    /// σₙ (s⁻¹) of a partial at `frequency` Hz.
    pub fn decay_rate(&self, frequency: f64) -> f64 {
        self.damping + self.damping_per_hz2 * frequency * frequency
    }

    fn check(&self) -> Result<()> {
        let ok = self.partials > 0
            && [self.inharmonicity, self.damping, self.damping_per_hz2, self.attack, self.release]
                .iter()
                .all(|x| x.is_finite() && *x >= 0.0)
            && self.release > 0.0;
        if ok {
            Ok(())
        } else {
            Err(Error::invalid_input(format!("invalid additive piano parameters: {self:?}")))
        }
    }

    fn voice(&self, note: &Note, rate: f64) -> Voice {
        let at = |t: f64| (t.max(0.0) * rate).round() as usize;
        let start = at(note.onset);
        let off = at(note.offset).max(start);
        let end = off + (self.release * rate).round() as usize;
        let v = f64::from(note.velocity.clamp(1, 127)) / 127.0;
        let partials = self
            .partial_frequencies(note.pitch)
            .into_iter()
            .enumerate()
            .take_while(|&(_, f)| f < 0.45 * rate)
            .map(|(i, f)| Partial {
                omega: 2.0 * std::f64::consts::PI * f / rate,
                sigma: self.decay_rate(f) / rate,
                amplitude: 1.0 / (i + 1) as f64,
            })
            .collect();
        Voice { start, off, end, gain: v * v, partials }
    }
}

/// What turns notes into sound: [`AdditivePiano`] and [`Renderer`].
pub trait Render {
    /// Renders `notes` (times in seconds) at `sample_rate` Hz for
    /// `duration` seconds, mono, not normalised, handing the samples to
    /// `sink` in order, in blocks of at most [`RENDER_BLOCK`] samples
    /// (memory stays bounded whatever the duration).
    fn render_with(
        &self,
        notes: &[Note],
        sample_rate: u32,
        duration: f64,
        sink: &mut dyn FnMut(&[f32]) -> Result<()>,
    ) -> Result<()>;

    /// The samples of [`render_with`](Self::render_with) in one vector.
    fn render(&self, notes: &[Note], sample_rate: u32, duration: f64) -> Result<Vec<f32>> {
        collect_samples(|sink| self.render_with(notes, sample_rate, duration, sink))
    }
}

/// Not normalised: a lone note at velocity 127 peaks below 3.4 = Σ 1/n.
impl Render for AdditivePiano {
    fn render_with(
        &self,
        notes: &[Note],
        sample_rate: u32,
        duration: f64,
        sink: &mut dyn FnMut(&[f32]) -> Result<()>,
    ) -> Result<()> {
        self.check()?;
        check_render_request(sample_rate, duration)?;
        let rate = f64::from(sample_rate);
        let voices: Vec<Voice> = notes.iter().map(|n| self.voice(n, rate)).collect();
        let total = (duration * rate).round() as usize;
        let attack = (self.attack * rate).max(1.0);
        let release_rate = (1e4f64).ln() / (self.release * rate);
        let mut out = vec![0f32; RENDER_BLOCK.min(total)];
        for start in (0..total).step_by(RENDER_BLOCK) {
            let out = &mut out[..RENDER_BLOCK.min(total - start)];
            // The voices sounding in this stretch, in note order.
            let end = start + out.len();
            let sounding: Vec<&Voice> = voices.iter().filter(|v| v.start < end && v.end > start).collect();
            out.par_chunks_mut(BLOCK)
                .enumerate()
                .for_each(|(b, block)| render_block(&sounding, start + b * BLOCK, block, attack, release_rate));
            sink(out)?;
        }
        Ok(())
    }
}

/// Samples `first ..` of the sum of `voices` into `block`.
fn render_block(voices: &[&Voice], first: usize, block: &mut [f32], attack: f64, release_rate: f64) {
    let last = first + block.len();
    let mut acc = vec![0f64; block.len()];
    let mut note = vec![0f64; block.len()];
    for v in voices.iter().filter(|v| v.start < last && v.end > first) {
        let lo = v.start.max(first);
        let hi = v.end.min(last);
        let part = &mut note[..hi - lo];
        part.fill(0.0);
        let since = (lo - v.start) as f64;
        for p in &v.partials {
            // z = aₙ·exp((−σ + iω)·m) at m = lo − start, then one
            // rotation-and-decay per sample.
            let magnitude = p.amplitude * (-p.sigma * since).exp();
            if magnitude < 1e-7 {
                continue;
            }
            let phase = (p.omega * since) % (2.0 * std::f64::consts::PI);
            let (mut re, mut im) = (magnitude * phase.cos(), magnitude * phase.sin());
            let d = (-p.sigma).exp();
            let (c, s) = (d * p.omega.cos(), d * p.omega.sin());
            for x in part.iter_mut() {
                *x += im;
                (re, im) = (re * c - im * s, re * s + im * c);
            }
        }
        for (k, x) in part.iter().enumerate() {
            let i = lo + k;
            let mut e = (((i - v.start) as f64 + 1.0) / attack).min(1.0);
            if i >= v.off {
                e *= (-release_rate * (i - v.off) as f64).exp();
            }
            acc[i - first] += v.gain * e * x;
        }
    }
    for (o, a) in block.iter_mut().zip(&acc) {
        *o = *a as f32;
    }
}

fn check_render_request(sample_rate: u32, duration: f64) -> Result<()> {
    if !(8000..=192_000).contains(&sample_rate) {
        return Err(Error::invalid_input(format!("sample rate must be 8000 to 192000 Hz, not {sample_rate}")));
    }
    if !(duration.is_finite() && duration > 0.0 && duration < 24.0 * 3600.0) {
        return Err(Error::invalid_input(format!("render duration must be positive and under 24 h, not {duration}")));
    }
    Ok(())
}

/// What turns notes into sound.
#[derive(Debug, Clone)]
pub enum Renderer {
    /// The built-in [`AdditivePiano`].
    Additive(AdditivePiano),
    /// A SoundFont's preset, played by rustysynth.
    SoundFont {
        /// The SoundFont.
        sound_font: LoadedSoundFont,
        /// The preset (bank, program) played.
        preset: Preset,
    },
}

impl Default for Renderer {
    /// The additive piano with its defaults.
    fn default() -> Self {
        Renderer::Additive(AdditivePiano::default())
    }
}

impl Renderer {
    /// A SoundFont renderer; errors if the SoundFont lacks `preset`.
    pub fn sound_font(sound_font: LoadedSoundFont, preset: Preset) -> Result<Self> {
        sound_font.preset_name(preset)?;
        Ok(Renderer::SoundFont { sound_font, preset })
    }

    /// Seconds the sound lasts after a note's release: the additive piano's
    /// [`release`](AdditivePiano::release), or [`SOUNDFONT_TAIL_SECONDS`].
    pub fn tail_seconds(&self) -> f64 {
        match self {
            Renderer::Additive(p) => p.release,
            Renderer::SoundFont { .. } => SOUNDFONT_TAIL_SECONDS,
        }
    }

    /// The length that holds every note and its release: the last offset
    /// plus [`tail_seconds`](Self::tail_seconds) (0 without notes).
    pub fn duration_of(&self, notes: &[Note]) -> f64 {
        notes.iter().map(|n| n.offset.max(n.onset) + self.tail_seconds()).fold(0.0, f64::max)
    }

    /// What it is, for messages: `the built-in additive piano` or
    /// `SoundFont <file>, bank B, program P (<preset name>)`.
    pub fn describe(&self) -> String {
        match self {
            Renderer::Additive(_) => "the built-in additive piano".to_string(),
            Renderer::SoundFont { sound_font, preset } => format!(
                "SoundFont {}, bank {}, program {} ({})",
                sound_font.path.display(),
                preset.bank,
                preset.program,
                sound_font.preset_name(*preset).unwrap_or_default()
            ),
        }
    }
}

impl Render for Renderer {
    fn render_with(
        &self,
        notes: &[Note],
        sample_rate: u32,
        duration: f64,
        sink: &mut dyn FnMut(&[f32]) -> Result<()>,
    ) -> Result<()> {
        match self {
            Renderer::Additive(p) => p.render_with(notes, sample_rate, duration, sink),
            Renderer::SoundFont { sound_font, preset } => {
                check_render_request(sample_rate, duration)?;
                sound_font.render_with(*preset, notes, sample_rate, duration, sink)
            }
        }
    }
}

/// Writes mono samples to `path` as a 16-bit PCM WAV file, atomically
/// ([`crate::files::write_atomically_with`]), scaled so that the peak is
/// [`WAV_PEAK`] (−1 dBFS: never clipped, quiet renderings made audible;
/// silence stays silence). `produce` hands the samples, in order, to the
/// sink it is given; it is called twice (for the peak, then to write), so
/// the samples need never be all in memory.
pub fn write_normalised_wav(
    path: &Path,
    sample_rate: u32,
    produce: impl Fn(&mut dyn FnMut(&[f32]) -> Result<()>) -> Result<()>,
) -> Result<()> {
    let mut peak = 0f32;
    produce(&mut |block| {
        peak = block.iter().fold(peak, |m, x| m.max(x.abs()));
        Ok(())
    })?;
    if !peak.is_finite() {
        return Err(Error::internal("rendering produced a non-finite sample"));
    }
    let scale = if peak > 0.0 { WAV_PEAK / peak } else { 0.0 };
    let spec =
        hound::WavSpec { channels: 1, sample_rate, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
    let failed = |e: hound::Error| match e {
        hound::Error::IoError(e) => Error::io(path, e),
        e => Error::internal(format!("writing WAV: {e}")).with_path(path),
    };
    crate::files::write_atomically_with(path, |file| {
        let mut w = hound::WavWriter::new(file, spec).map_err(failed)?;
        produce(&mut |block| {
            let mut samples = w.get_i16_writer(block.len() as u32);
            for &x in block {
                samples.write_sample((x * scale * 32767.0).round().clamp(-32768.0, 32767.0) as i16);
            }
            samples.flush().map_err(failed)
        })?;
        w.finalize().map_err(failed)
    })
}

/// Writes `samples` with [`write_normalised_wav`].
pub fn write_wav(path: &Path, samples: &[f32], sample_rate: u32) -> Result<()> {
    write_normalised_wav(path, sample_rate, |sink| sink(samples))
}

/// Writes `notes` played by `renderer` for `duration` seconds with
/// [`write_normalised_wav`], rendering them twice rather than holding the
/// samples (a 16-bit WAV of an hour at 44.1 kHz is 318 MB; its f32 samples
/// would be 635 MB more).
pub fn write_rendering(
    path: &Path,
    renderer: &Renderer,
    notes: &[Note],
    sample_rate: u32,
    duration: f64,
) -> Result<()> {
    write_normalised_wav(path, sample_rate, |sink| renderer.render_with(notes, sample_rate, duration, sink))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(onset: f64, offset: f64, pitch: u8, velocity: u8) -> Note {
        Note { onset, offset, pitch, velocity }
    }

    /// The same samples as the closed form of the module documentation,
    /// summed directly (no recurrence, no blocks).
    fn naive(p: &AdditivePiano, n: &Note, rate: f64, total: usize) -> Vec<f64> {
        let (start, off) = ((n.onset * rate).round() as usize, (n.offset * rate).round() as usize);
        let end = off + (p.release * rate).round() as usize;
        let gain = (n.velocity as f64 / 127.0).powi(2);
        (0..total)
            .map(|i| {
                if i < start || i >= end {
                    return 0.0;
                }
                let t = (i - start) as f64 / rate;
                let mut e = (((i - start) as f64 + 1.0) / (p.attack * rate)).min(1.0);
                if i >= off {
                    e *= (-(1e4f64).ln() * (i - off) as f64 / (p.release * rate)).exp();
                }
                let s: f64 = p
                    .partial_frequencies(n.pitch)
                    .iter()
                    .enumerate()
                    .filter(|(_, &f)| f < 0.45 * rate)
                    .map(|(k, &f)| {
                        (-p.decay_rate(f) * t).exp() * (2.0 * std::f64::consts::PI * f * t).sin() / (k + 1) as f64
                    })
                    .sum();
                gain * e * s
            })
            .collect()
    }

    #[test]
    fn matches_the_closed_form_across_blocks() {
        let p = AdditivePiano::default();
        let rate = 8000.0;
        // Notes across the parallel blocks and the sink's blocks.
        let notes = [note(0.1, 0.9, 81, 100), note(7.9, 8.6, 69, 60)];
        let total = RENDER_BLOCK + 3 * BLOCK + 17;
        assert!(8.6 * rate > RENDER_BLOCK as f64 && 7.9 * rate < RENDER_BLOCK as f64);
        let x = p.render(&notes, 8000, total as f64 / rate).unwrap();
        assert_eq!(x.len(), total);
        let (y0, y1) = (naive(&p, &notes[0], rate, total), naive(&p, &notes[1], rate, total));
        let err = (0..total).map(|i| (x[i] as f64 - y0[i] - y1[i]).abs()).fold(0.0, f64::max);
        assert!(err < 1e-5, "largest difference {err}");
    }

    #[test]
    fn partials_above_nyquist_are_left_out() {
        let p = AdditivePiano::default();
        let x = p.render(&[note(0.0, 0.5, 108, 100)], 8000, 0.5).unwrap();
        // C8 is 4186 Hz, above 0.45 × 8000: nothing is rendered.
        assert!(x.iter().all(|&v| v == 0.0));
        let y = p.render(&[note(0.0, 0.5, 96, 100)], 8000, 0.5).unwrap();
        assert!(y.iter().any(|&v| v != 0.0));
    }

    #[test]
    fn the_same_samples_with_one_or_two_threads() {
        let notes: Vec<Note> =
            (0..40).map(|i| note(0.05 * i as f64, 0.05 * i as f64 + 0.3, 40 + i as u8, 90)).collect();
        let render = |threads| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| AdditivePiano::default().render(&notes, 22_050, 2.5).unwrap())
        };
        assert!(render(1) == render(2));
    }

    #[test]
    fn wav_files_are_normalised_pcm() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.wav");
        let x: Vec<f32> = (0..1000).map(|i| 3.0 * (i as f32 * 0.05).sin()).collect();
        write_wav(&path, &x, 8000).unwrap();
        let r = hound::WavReader::open(&path).unwrap();
        assert_eq!((r.spec().channels, r.spec().bits_per_sample, r.spec().sample_rate), (1, 16, 8000));
        let s: Vec<i16> = r.into_samples::<i16>().map(|s| s.unwrap()).collect();
        assert_eq!(s.len(), 1000);
        let peak = s.iter().map(|v| v.unsigned_abs()).max().unwrap();
        assert!((f32::from(peak) / 32767.0 - WAV_PEAK).abs() < 1e-3, "{peak}");
        write_wav(&path, &[0.0; 10], 8000).unwrap();
        let s: Vec<i16> = hound::WavReader::open(&path).unwrap().into_samples::<i16>().map(|s| s.unwrap()).collect();
        assert_eq!(s, vec![0; 10]);
        // A rendering written as it is made: the same file as its samples
        // written at once.
        let notes = [note(0.1, 0.5, 60, 90), note(8.0, 8.5, 72, 90)];
        let r = Renderer::default();
        let rendered = r.render(&notes, 8000, 9.0).unwrap();
        assert!(rendered.len() > RENDER_BLOCK);
        write_wav(&path, &rendered, 8000).unwrap();
        let streamed = dir.path().join("streamed.wav");
        write_rendering(&streamed, &r, &notes, 8000, 9.0).unwrap();
        assert!(std::fs::read(&path).unwrap() == std::fs::read(&streamed).unwrap());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn bad_requests_are_errors() {
        let p = AdditivePiano::default();
        assert!(p.render(&[], 100, 1.0).is_err());
        assert!(p.render(&[], 8000, f64::NAN).is_err());
        assert!(p.render(&[], 8000, 0.0).is_err());
        assert!(AdditivePiano { release: 0.0, ..p }.render(&[], 8000, 1.0).is_err());
        let r = Renderer::default();
        assert_eq!(r.duration_of(&[]), 0.0);
        assert!((r.duration_of(&[note(1.0, 2.0, 60, 1), note(1.5, 1.8, 62, 1)]) - 2.25).abs() < 1e-12);
    }
}
