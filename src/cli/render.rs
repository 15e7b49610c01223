//! `sscnmf render`: a note list to a WAV file, to listen to it.

use sscnmf::synth::{write_rendering, Renderer};

use super::*;

/// How notes are turned into sound (shared by `render` and `transcribe --sonify`).
#[derive(Args, Debug, Clone)]
pub(super) struct SoundArgs {
    /// Play the notes with this SoundFont (SF2) instead of the built-in additive piano.
    #[arg(long, value_name = "FILE.sf2")]
    pub soundfont: Option<PathBuf>,
    /// SoundFont bank of the preset to play (with --soundfont).
    #[arg(long, default_value_t = 0, requires = "soundfont")]
    pub bank: u8,
    /// SoundFont program of the preset to play (with --soundfont; 0 = GM grand piano).
    #[arg(long, default_value_t = 0, requires = "soundfont")]
    pub program: u8,
    /// Sample rate of the rendered WAV file (Hz).
    #[arg(long, default_value_t = 44_100, value_parser = clap::value_parser!(u32).range(8000..=192_000))]
    pub sample_rate: u32,
}

impl SoundArgs {
    /// The renderer they describe (reads the SoundFont).
    pub fn renderer(&self) -> anyhow::Result<Renderer> {
        Ok(match &self.soundfont {
            None => Renderer::default(),
            Some(path) => {
                Renderer::sound_font(LoadedSoundFont::load(path)?, Preset { bank: self.bank, program: self.program })?
            }
        })
    }
}

#[derive(Args, Debug)]
pub(super) struct RenderArgs {
    /// Notes to play: MIDI (.mid), CSV (start_time_s,end_time_s,pitch_midi,velocity), MAPS txt or JSON.
    notes: PathBuf,
    /// Output WAV file.
    #[arg(short, long)]
    output: PathBuf,
    #[command(flatten)]
    sound: SoundArgs,
    /// Replace the output file if it exists.
    #[arg(long)]
    overwrite: bool,
    /// Say nothing on success.
    #[arg(short, long)]
    quiet: bool,
}

/// Refuses an output that does not end in `.wav` (a `-o song.mid` typed by
/// habit would otherwise get WAV bytes).
pub(super) fn check_wav_name(path: &Path) -> anyhow::Result<()> {
    let ok = path.extension().and_then(|e| e.to_str()).is_some_and(|e| e.eq_ignore_ascii_case("wav"));
    if !ok {
        bail!("{}: the output is a WAV file; name it *.wav", path.display());
    }
    Ok(())
}

pub(super) fn render(a: RenderArgs) -> anyhow::Result<()> {
    check_wav_name(&a.output)?;
    let inputs: Vec<PathBuf> = std::iter::once(a.notes.clone()).chain(a.sound.soundfont.clone()).collect();
    check_writable(&a.output, a.overwrite, &inputs)?;
    let notes = read_notes(&a.notes)?;
    if notes.is_empty() {
        return Err(Error::invalid_input("no notes to render").with_path(&a.notes).into());
    }
    let renderer = a.sound.renderer()?;
    let duration = renderer.duration_of(&notes);
    write_rendering(&a.output, &renderer, &notes, a.sound.sample_rate, duration)?;
    if !a.quiet {
        eprintln!(
            "{}: {} notes, {:.1} s, played by {} -> {}",
            a.notes.display(),
            notes.len(),
            duration,
            renderer.describe(),
            a.output.display()
        );
    }
    Ok(())
}
