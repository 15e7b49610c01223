//! Rendering notes through a SoundFont (SF2) with [rustysynth], so that
//! templates can be learned for any instrument someone has samples of, and
//! test pieces rendered without an external synthesizer.
//!
//! # Isolated notes
//!
//! [`render_isolated_notes`] plays each pitch alone with the timing of MAPS's
//! isolated notes (and of the dev set's, measured: silence up to 0.5 s, then
//! the key held 2.0 s, then 1.0 s for the release, 3.5 s in all):
//! [`IsolatedNoteTiming::default`]. The synthesizer runs at the requested
//! sample rate, reverb and chorus off, channel 0, no pedal; its stereo output
//! is averaged to mono (as the dev set's FluidSynth renderings were).
//! [`crate::templates::TemplateLearner::learn_rendered`] learns from the
//! result in memory.
//!
//! # Errors
//!
//! A file that cannot be read or is not a valid SF2 (rustysynth reads SF2
//! only, not the compressed SF3), and a bank/program the SoundFont lacks,
//! are [`ErrorKind::InvalidInput`] errors whose one-line message names the
//! file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;
use rustysynth::{SoundFont, Synthesizer, SynthesizerSettings};

use crate::notes::Note;
use crate::{Error, ErrorKind, Result};

/// A SoundFont read from a file, with the name it was read from.
#[derive(Debug, Clone)]
pub struct LoadedSoundFont {
    /// The parsed SoundFont.
    pub sound_font: Arc<SoundFont>,
    /// Where it came from (named by error messages).
    pub path: PathBuf,
}

/// A preset of a SoundFont: MIDI bank and program (both 0 = the General MIDI
/// grand piano).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Preset {
    /// Bank (0..=127; 128 is the GM percussion bank, played on channel 10).
    pub bank: u8,
    /// Program (0..=127).
    pub program: u8,
}

impl LoadedSoundFont {
    /// Reads and parses an SF2 file.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_bytes(&bytes, path)
    }

    /// Parses SF2 bytes; errors name `path`.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self> {
        let sound_font = SoundFont::new(&mut &bytes[..]).map_err(|e| {
            Error::invalid_input(match e {
                rustysynth::SoundFontError::UnsupportedSampleFormat => {
                    "not an SF2 SoundFont (compressed SF3 is not supported; convert it to SF2)".to_string()
                }
                e => format!("not a valid SF2 SoundFont ({e})"),
            })
            .with_path(path)
        })?;
        Ok(LoadedSoundFont { sound_font: Arc::new(sound_font), path: path.to_path_buf() })
    }

    /// The presets it holds, as (bank, program, name), sorted.
    pub fn presets(&self) -> Vec<(u8, u8, String)> {
        let mut v: Vec<(u8, u8, String)> = self
            .sound_font
            .get_presets()
            .iter()
            .map(|p| {
                (
                    p.get_bank_number().clamp(0, 255) as u8,
                    p.get_patch_number().clamp(0, 255) as u8,
                    p.get_name().to_string(),
                )
            })
            .collect();
        v.sort();
        v
    }

    /// The name of `preset`, or an error listing a few presets it does have.
    pub fn preset_name(&self, preset: Preset) -> Result<String> {
        let presets = self.presets();
        if let Some((_, _, name)) = presets.iter().find(|(b, p, _)| *b == preset.bank && *p == preset.program) {
            return Ok(name.clone());
        }
        let listed: Vec<String> = presets.iter().take(5).map(|(b, p, n)| format!("{b}:{p} {n}")).collect();
        Err(Error::invalid_input(format!(
            "no preset at bank {}, program {} (it has {} preset{}: {}{})",
            preset.bank,
            preset.program,
            presets.len(),
            if presets.len() == 1 { "" } else { "s" },
            listed.join(", "),
            if presets.len() > 5 { ", ..." } else { "" }
        ))
        .with_path(&self.path))
    }

    /// Renders `notes` (times in seconds, velocities 1..=127) with `preset`
    /// at `sample_rate` Hz for `duration` seconds: mono (the mean of the
    /// synthesizer's two channels), reverb and chorus off, no pedal.
    /// Each note-on and note-off is sent at its sample; rustysynth starts
    /// and stops voices at its next 64-sample block (within 1.5 ms at
    /// 44.1 kHz).
    pub fn render(&self, preset: Preset, notes: &[Note], sample_rate: u32, duration: f64) -> Result<Vec<f32>> {
        collect_samples(|sink| self.render_with(preset, notes, sample_rate, duration, sink))
    }

    /// [`render`](Self::render), handing the samples to `sink` in order, in
    /// blocks of at most [`RENDER_BLOCK`] samples (memory stays bounded
    /// whatever the duration; the samples are those of `render`).
    pub fn render_with(
        &self,
        preset: Preset,
        notes: &[Note],
        sample_rate: u32,
        duration: f64,
        sink: &mut dyn FnMut(&[f32]) -> Result<()>,
    ) -> Result<()> {
        self.preset_name(preset)?;
        if !(duration.is_finite() && duration > 0.0 && duration < 24.0 * 3600.0) {
            return Err(Error::invalid_input(format!("render duration must be positive, not {duration}")));
        }
        let mut settings = SynthesizerSettings::new(sample_rate as i32);
        settings.enable_reverb_and_chorus = false;
        let mut synth = Synthesizer::new(&self.sound_font, &settings).map_err(|e| {
            Error::invalid_input(format!("cannot render at {sample_rate} Hz: {e}")).with_path(&self.path)
        })?;
        let channel = if preset.bank == 128 { Synthesizer::PERCUSSION_CHANNEL as i32 } else { 0 };
        synth.process_midi_message(channel, 0xB0, 0x00, i32::from(preset.bank % 128));
        synth.process_midi_message(channel, 0xC0, i32::from(preset.program), 0);

        // (sample, is_on, pitch, velocity); offs before ons at the same sample.
        let at = |t: f64| (t.max(0.0) * sample_rate as f64).round() as usize;
        let mut events: Vec<(usize, bool, u8, u8)> = Vec::with_capacity(2 * notes.len());
        for n in notes {
            events.push((at(n.onset), true, n.pitch, n.velocity.clamp(1, 127)));
            events.push((at(n.offset), false, n.pitch, 0));
        }
        events.sort_by_key(|&(s, on, p, _)| (s, on, p));
        let mut events = events.into_iter().peekable();
        let total = at(duration);
        let mut left = vec![0f32; RENDER_BLOCK.min(total)];
        let mut right = left.clone();
        let mut mono = left.clone();
        let mut first = 0;
        while first < total {
            let last = (first + RENDER_BLOCK).min(total);
            let mut done = first;
            loop {
                while let Some(&(_, on, pitch, velocity)) = events.peek().filter(|e| e.0 <= done) {
                    if on {
                        synth.note_on(channel, i32::from(pitch), i32::from(velocity));
                    } else {
                        synth.note_off(channel, i32::from(pitch));
                    }
                    events.next();
                }
                let next = events.peek().map_or(last, |e| e.0.min(last));
                synth.render(&mut left[done - first..next - first], &mut right[done - first..next - first]);
                done = next;
                if done >= last {
                    break;
                }
            }
            let n = last - first;
            for ((m, l), r) in mono[..n].iter_mut().zip(&left[..n]).zip(&right[..n]) {
                *m = 0.5 * (l + r);
            }
            sink(&mono[..n])?;
            first = last;
        }
        Ok(())
    }
}

/// The samples that `produce` hands to its sink, in one vector.
pub(crate) fn collect_samples(
    produce: impl FnOnce(&mut dyn FnMut(&[f32]) -> Result<()>) -> Result<()>,
) -> Result<Vec<f32>> {
    let mut out = Vec::new();
    produce(&mut |block| {
        out.extend_from_slice(block);
        Ok(())
    })?;
    Ok(out)
}

/// Samples per block handed to the sink of [`LoadedSoundFont::render_with`]
/// (and of [`crate::synth::Render::render_with`]): 2¹⁶, 1.5 s at 44.1 kHz.
pub const RENDER_BLOCK: usize = 1 << 16;

/// When an isolated note is played: MAPS's and the dev set's timing by
/// default.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IsolatedNoteTiming {
    /// Silence before the note (s). Default 0.5.
    pub silence: f64,
    /// How long the key is held (s). Default 2.0.
    pub hold: f64,
    /// Time after the release (s). Default 1.0.
    pub release: f64,
    /// MIDI velocity. Default 70 (MAPS's and the dev set's intensity `M`).
    pub velocity: u8,
}

impl Default for IsolatedNoteTiming {
    fn default() -> Self {
        IsolatedNoteTiming { silence: 0.5, hold: 2.0, release: 1.0, velocity: 70 }
    }
}

/// One rendered isolated note.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedNote {
    /// MIDI pitch.
    pub pitch: u8,
    /// Mono samples at the rate it was rendered at.
    pub samples: Vec<f32>,
}

/// Renders each of `pitches` alone (in parallel) with `preset` and `timing`
/// at `sample_rate` Hz. A pitch the preset does not sound (silent rendering)
/// is an error naming it.
pub fn render_isolated_notes(
    sound_font: &LoadedSoundFont,
    preset: Preset,
    pitches: &[u8],
    timing: IsolatedNoteTiming,
    sample_rate: u32,
) -> Result<Vec<RenderedNote>> {
    sound_font.preset_name(preset)?;
    let duration = timing.silence + timing.hold + timing.release;
    pitches
        .par_iter()
        .map(|&pitch| {
            let note =
                Note { onset: timing.silence, offset: timing.silence + timing.hold, pitch, velocity: timing.velocity };
            let samples = sound_font.render(preset, &[note], sample_rate, duration)?;
            if samples.iter().all(|&x| x.abs() < 1e-7) {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "bank {}, program {} is silent at MIDI pitch {pitch} (choose --pitches within its range)",
                        preset.bank, preset.program
                    ),
                )
                .with_path(&sound_font.path));
            }
            Ok(RenderedNote { pitch, samples })
        })
        .collect()
}
