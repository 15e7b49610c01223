//! Pictures of every stage, as PNG or SVG (plotters): the spectrogram, the
//! templates, the activations with the onset rule, a piano roll against a
//! reference, and blind decompositions.
//!
//! # Conventions
//!
//! - Magnitudes are shown in decibels relative to the largest value shown,
//!   `20 log10(x / max)`, clipped to `[−range, 0]` dB (default range 80 dB),
//!   with the viridis colour map (dark = quiet) and a colour bar.
//! - Frequency axes are logarithmic (an octave is the same height
//!   everywhere, as pitch is heard); a pixel row covering several bins
//!   shows their largest value, one between two bins (low frequencies) the
//!   linear interpolation of their magnitudes. Time axes likewise show the
//!   largest value of the frames a pixel column covers, so a short onset is
//!   never lost to downsampling.
//! - Times are seconds in the source file (an `--offset` shifts the axis).
//!   Pitches are MIDI numbers with scientific note names (60 = C4).
//!
//! # Figures
//!
//! Each figure is a value implementing [`Figure`], drawn on any plotters
//! backend; [`render`] returns PNG or SVG bytes and [`save`] writes them
//! atomically, the format chosen by the file's extension. Text uses the
//! bundled font (`assets/plot-font.ttf`, DejaVu Sans cut to the characters
//! used; see `scripts/make-plot-font.sh`), so no system font is needed.
//!
//! | figure | shows | in the paper |
//! |---|---|---|
//! | [`TfFigure::spectrogram`] | `|STFT|` in dB, log frequency | |
//! | [`TfFigure::templates`] | a few templates `W[:, :, q]`, F × τ each | figure 3 |
//! | [`TfFigure::template_overview`] | all templates' spectra side by side | |
//! | [`ActivationsFigure`] | `h` of a few pitches, `s + δ`, the onsets | figures 4-5 |
//! | [`PianoRollFigure`] | notes: hits, misses, false notes | |
//! | [`DecompositionFigure`] | blind W and H, ordered by pitch | the tutorial |
//! | [`TfFigure::rank_one`] | a note and its best rank-one approximations | the tutorial |
//!
//! This module reads the results of the earlier stages and changes none.

use std::ops::Range;
use std::path::Path;

use plotters::coord::combinators::WithKeyPoints;
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::evaluation::{match_notes, precision_recall_f1_overlap, MatchParams};
use crate::factorization::blind::{estimate_fundamental, frequency_midi, midi_frequency, Decomposition};
use crate::factorization::Matrix;
use crate::notes::Note;
use crate::spectrogram::Stft;
use crate::templates::TemplateDictionary;
use crate::transcription::{moving_average, Activations, OnsetDetector};
use crate::{Error, Result};

/// The bundled font (DejaVu Sans, subset; Bitstream Vera licence, see
/// `assets/README.md`).
static FONT: &[u8] = include_bytes!("../assets/plot-font.ttf");

const FONT_NAME: &str = "sans-serif";

/// Registers [`FONT`] with plotters once (its `ab_glyph` text renderer
/// draws only registered fonts).
fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // The font is part of the binary and checked by the tests.
        let _ = plotters::style::register_font(FONT_NAME, FontStyle::Normal, FONT);
    });
}

/// What a drawing function returns.
pub type DrawResult<DB> = std::result::Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

/// A picture that can be drawn on any plotters backend.
pub trait Figure {
    /// Width and height in pixels.
    fn size(&self) -> (u32, u32);
    /// Draws the figure on `root` (already white).
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB>;
}

/// The picture formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    /// PNG, 8-bit RGB.
    Png,
    /// SVG (images inside it, such as spectrograms, are embedded PNG).
    Svg,
}

impl ImageFormat {
    /// The format a file's extension names (`.png`, `.svg`, any case).
    pub fn from_path(path: &Path) -> Result<ImageFormat> {
        match path.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase()).as_deref() {
            Some("png") => Ok(ImageFormat::Png),
            Some("svg") => Ok(ImageFormat::Svg),
            _ => Err(Error::invalid_input("pictures are written as .png or .svg: use one of these extensions")
                .with_path(path)),
        }
    }
}

fn drawing_error<E: std::error::Error + Send + Sync>(e: DrawingAreaErrorKind<E>) -> Error {
    Error::internal(format!("drawing failed: {e}"))
}

/// The figure as PNG or SVG bytes.
pub fn render<F: Figure>(figure: &F, format: ImageFormat) -> Result<Vec<u8>> {
    register_font();
    let (w, h) = figure.size();
    match format {
        ImageFormat::Png => {
            let mut pixels = vec![255u8; w as usize * h as usize * 3];
            {
                let root = BitMapBackend::with_buffer(&mut pixels, (w, h)).into_drawing_area();
                figure.draw(&root).map_err(drawing_error)?;
                root.present().map_err(drawing_error)?;
            }
            encode_png(&pixels, w, h)
        }
        ImageFormat::Svg => {
            let mut svg = String::new();
            {
                let root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
                root.fill(&WHITE).map_err(drawing_error)?;
                figure.draw(&root).map_err(drawing_error)?;
                root.present().map_err(drawing_error)?;
            }
            // plotters-svg 0.3.7 labels embedded images `data:png`, which is
            // not a media type; browsers want `data:image/png`.
            Ok(svg.replace("href=\"data:png;base64,", "href=\"data:image/png;base64,").into_bytes())
        }
    }
}

/// Renders the figure in the format of `path`'s extension and writes it
/// atomically ([`crate::files::write_atomically`]).
pub fn save<F: Figure>(figure: &F, path: &Path) -> Result<()> {
    let format = ImageFormat::from_path(path)?;
    let bytes = render(figure, format)?;
    crate::files::write_atomically(path, &bytes)
}

/// 8-bit RGB pixels as a PNG file. Written with the `png` crate into
/// memory (plotters' own encoder writes only to a path, which would not be
/// atomic). A picture of at most 256 colours is stored with a palette, a
/// third of the size; the colour maps have [`COLOR_LEVELS`] colours, and the
/// text's anti-aliasing greys are snapped to 16 levels when that makes the
/// picture fit.
fn encode_png(rgb: &[u8], w: u32, h: u32) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let err = |e: png::EncodingError| Error::internal(format!("PNG encoding failed: {e}"));
    let palette = palette_of(rgb).or_else(|| {
        let mut snapped = rgb.to_vec();
        for px in snapped.chunks_exact_mut(3) {
            if px[0] == px[1] && px[1] == px[2] {
                let g = ((px[0] as u32 + 8) / 17 * 17).min(255) as u8;
                px.copy_from_slice(&[g, g, g]);
            }
        }
        palette_of(&snapped)
    });
    {
        let mut encoder = png::Encoder::new(&mut out, w, h);
        encoder.set_compression(png::Compression::Best);
        encoder.set_depth(png::BitDepth::Eight);
        match palette {
            Some((palette, indexed)) => {
                encoder.set_color(png::ColorType::Indexed);
                encoder.set_palette(palette);
                encoder.write_header().map_err(err)?.write_image_data(&indexed).map_err(err)?;
            }
            None => {
                encoder.set_color(png::ColorType::Rgb);
                encoder.write_header().map_err(err)?.write_image_data(rgb).map_err(err)?;
            }
        }
    }
    Ok(out)
}

/// The palette (RGB triples) and indices of `rgb`, if it has at most 256 colours.
fn palette_of(rgb: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut palette = Vec::new();
    let mut index = std::collections::HashMap::new();
    let mut indexed = Vec::with_capacity(rgb.len() / 3);
    for px in rgb.chunks_exact(3) {
        let next = index.len();
        let i = *index.entry([px[0], px[1], px[2]]).or_insert(next);
        if i == next {
            if next == 256 {
                return None;
            }
            palette.extend_from_slice(px);
        }
        indexed.push(i as u8);
    }
    Some((palette, indexed))
}

// ---------------------------------------------------------------------------
// Time-frequency images.

/// Nonnegative values on a grid of columns × frequency bins, shown as an
/// image on a log-frequency axis: a pooled spectrogram, a template, a
/// dictionary's spectra.
#[derive(Debug, Clone, PartialEq)]
pub struct TfImage {
    /// Column-major values: bin `f` of column `c` is `values[c * n_bins + f]`.
    pub values: Vec<f64>,
    /// Bins per column.
    pub n_bins: usize,
    /// Number of columns.
    pub n_cols: usize,
    /// Hz between bins (bin `f` is at `f · bin_hz`).
    pub bin_hz: f64,
    /// The x coordinate of column 0's left edge (seconds, or a pitch).
    pub x_start: f64,
    /// The width of a column in x units.
    pub x_step: f64,
}

impl TfImage {
    /// The largest value.
    pub fn max(&self) -> f64 {
        self.values.iter().copied().fold(0.0, f64::max)
    }

    /// The x range the columns cover.
    pub fn x_range(&self) -> Range<f64> {
        self.x_start..self.x_start + self.n_cols as f64 * self.x_step
    }

    fn column(&self, c: usize) -> &[f64] {
        &self.values[c * self.n_bins..(c + 1) * self.n_bins]
    }

    /// The magnitude spectrogram of `samples` (mono, at the STFT's rate)
    /// with frames max-pooled by groups so that there are at most
    /// `max_cols` columns; frame 0 is at `start_seconds`. Computed in blocks
    /// of frames, so memory is `max_cols` columns whatever the length.
    pub fn spectrogram(stft: &Stft, samples: &[f32], start_seconds: f64, max_cols: usize) -> TfImage {
        let config = stft.config();
        let n_bins = config.n_bins();
        let n_frames = stft.n_frames(samples.len());
        let pool = n_frames.div_ceil(max_cols.max(1)).max(1);
        let n_cols = n_frames.div_ceil(pool);
        let mut values = vec![0.0; n_cols * n_bins];
        let block = pool * 64usize.div_ceil(pool);
        let mut first = 0;
        while first < n_frames {
            let n = block.min(n_frames - first);
            let spec = stft.magnitude_frames(samples, first, n);
            for t in 0..n {
                let c = (first + t) / pool;
                let out = &mut values[c * n_bins..(c + 1) * n_bins];
                for (o, &x) in out.iter_mut().zip(spec.frame(t)) {
                    *o = f64::max(*o, x);
                }
            }
            first += n;
        }
        let hop = config.hop_seconds();
        TfImage {
            values,
            n_bins,
            n_cols,
            bin_hz: config.sample_rate as f64 / config.n_fft as f64,
            x_start: start_seconds - hop / 2.0,
            x_step: pool as f64 * hop,
        }
    }

    /// An F × N matrix (bins × frames) whose frame `t` is at
    /// `start_seconds + t · hop_seconds`.
    pub fn from_matrix(m: &Matrix<f64>, bin_hz: f64, start_seconds: f64, hop_seconds: f64) -> TfImage {
        TfImage {
            values: m.data.clone(),
            n_bins: m.rows,
            n_cols: m.cols,
            bin_hz,
            x_start: start_seconds - hop_seconds / 2.0,
            x_step: hop_seconds,
        }
    }
}

/// How magnitudes become colours: decibels relative to `reference`,
/// clipped to `[−range_db, 0]`, through viridis.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DbScale {
    /// The magnitude shown as 0 dB (the brightest colour).
    pub reference: f64,
    /// The dynamic range shown, in dB (quieter is the darkest colour).
    pub range_db: f64,
}

impl DbScale {
    /// `x` in dB relative to the reference, clipped.
    pub fn db(&self, x: f64) -> f64 {
        if x > 0.0 && self.reference > 0.0 {
            (20.0 * (x / self.reference).log10()).clamp(-self.range_db, 0.0)
        } else {
            -self.range_db
        }
    }

    /// The colour of `x`: one of [`COLOR_LEVELS`] steps of viridis.
    fn color(&self, x: f64) -> [u8; 3] {
        let u = 1.0 + self.db(x) / self.range_db;
        let step = (u.clamp(0.0, 1.0) * (COLOR_LEVELS - 1) as f64).round();
        let RGBColor(r, g, b) = ViridisRGB::get_color(step / (COLOR_LEVELS - 1) as f64);
        [r, g, b]
    }
}

/// Colours of the colour map: 1.3 dB steps over 80 dB, finer than the eye
/// tells apart in a spectrogram, and few enough that a picture with its
/// text fits a 256-colour palette (PNG files a third of the size).
pub const COLOR_LEVELS: usize = 64;

/// Default dynamic range of the pictures, in dB.
pub const DEFAULT_RANGE_DB: f64 = 80.0;

/// The lowest frequency shown by default (just under A0, 27.5 Hz).
pub const DEFAULT_FMIN: f64 = 25.0;

/// Frequency axis ticks: 1-2-5 per decade, in the range.
fn frequency_ticks(range: &Range<f64>) -> Vec<f64> {
    let mut ticks = Vec::new();
    let mut decade = 1.0;
    while decade <= range.end {
        for m in [1.0, 2.0, 5.0] {
            let f = m * decade;
            if f >= range.start && f <= range.end {
                ticks.push(f);
            }
        }
        decade *= 10.0;
    }
    ticks
}

fn format_hz(f: f64) -> String {
    if f >= 1000.0 {
        format!("{}k", f / 1000.0)
    } else {
        format!("{f}")
    }
}

/// Scientific pitch name: 60 → "C4", 61 → "C#4", 21 → "A0".
pub fn note_name(pitch: u8) -> String {
    const NAMES: [&str; 12] = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"];
    format!("{}{}", NAMES[pitch as usize % 12], pitch as i32 / 12 - 1)
}

/// The text styles of all figures.
fn font(size: u32) -> TextStyle<'static> {
    (FONT_NAME, size).into_font().color(&BLACK)
}

/// How the columns' x axis of a [`TfImage`] panel is labelled.
struct XAxis<'a> {
    range: Range<f64>,
    desc: &'a str,
    format: &'a dyn Fn(&f64) -> String,
    labels: usize,
}

/// The coordinates of a time-frequency panel: linear x, log frequency.
type TfCoord = Cartesian2d<RangedCoordf64, WithKeyPoints<LogCoord<f64>>>;

/// Draws `image` on `area` with a log-frequency axis over `freq` and the
/// colours of `scale`, `caption` above it; returns the chart, to draw
/// more on it.
fn draw_tf_panel<'a, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    image: &TfImage,
    x: &XAxis<'_>,
    freq: &Range<f64>,
    scale: &DbScale,
    caption: &str,
    y_desc: bool,
) -> std::result::Result<ChartContext<'a, DB, TfCoord>, DrawingAreaErrorKind<DB::ErrorType>> {
    let mut builder = ChartBuilder::on(area);
    builder.margin(8).x_label_area_size(42).y_label_area_size(if y_desc { 62 } else { 40 });
    if !caption.is_empty() {
        builder.caption(caption, font(16));
    }
    let mut chart =
        builder.build_cartesian_2d(x.range.clone(), freq.clone().log_scale().with_key_points(frequency_ticks(freq)))?;
    let (px, py) = chart.plotting_area().get_pixel_range();
    let (w, h) = ((px.end - px.start).max(1) as usize, (py.end - py.start).max(1) as usize);
    let pixels = tf_pixels(image, &x.range, freq, scale, w, h);
    if let Some(bitmap) = BitMapElement::<(i32, i32)>::with_owned_buffer((0, 0), (w as u32, h as u32), pixels) {
        chart.plotting_area().strip_coord_spec().draw(&bitmap)?;
    }
    let mut mesh = chart.configure_mesh();
    mesh.disable_mesh()
        .x_desc(x.desc)
        .x_labels(x.labels)
        .x_label_formatter(x.format)
        .y_label_formatter(&|f| format_hz(*f))
        .label_style(font(13))
        .axis_desc_style(font(14));
    if y_desc {
        mesh.y_desc("frequency (Hz)");
    }
    mesh.draw()?;
    Ok(chart)
}

/// The RGB pixels (w × h, row 0 at the top) of `image` over `x_range` ×
/// `freq` (log), as the [module docs](self) describe; white outside the
/// image's columns.
fn tf_pixels(image: &TfImage, x_range: &Range<f64>, freq: &Range<f64>, scale: &DbScale, w: usize, h: usize) -> Vec<u8> {
    let mut out = vec![255u8; w * h * 3];
    if image.n_cols == 0 || image.n_bins == 0 {
        return out;
    }
    let (llo, lhi) = (freq.start.ln(), freq.end.ln());
    // Each pixel row: the bins whose centres it covers, or the two bins
    // around its centre and the interpolation weight.
    enum Rows {
        Max(usize, usize),
        Lerp(usize, usize, f64),
    }
    let last = image.n_bins - 1;
    let rows: Vec<Rows> = (0..h)
        .map(|j| {
            let top = (lhi - j as f64 / h as f64 * (lhi - llo)).exp();
            let bottom = (lhi - (j + 1) as f64 / h as f64 * (lhi - llo)).exp();
            let lo = (bottom / image.bin_hz).ceil() as usize;
            let hi = ((top / image.bin_hz).ceil() as usize).min(last + 1);
            if lo < hi {
                Rows::Max(lo, hi)
            } else {
                let centre = (lhi - (j as f64 + 0.5) / h as f64 * (lhi - llo)).exp() / image.bin_hz;
                let below = (centre.floor() as usize).min(last);
                Rows::Lerp(below, (below + 1).min(last), centre - below as f64)
            }
        })
        .collect();
    let span = x_range.end - x_range.start;
    let mut pooled = vec![0.0; image.n_bins];
    for i in 0..w {
        let xa = x_range.start + i as f64 / w as f64 * span;
        let xb = x_range.start + (i + 1) as f64 / w as f64 * span;
        let centre = |c: usize| image.x_start + (c as f64 + 0.5) * image.x_step;
        // Columns whose centres fall in the pixel, or the one under its centre.
        let first = ((xa - image.x_start) / image.x_step - 0.5).ceil().max(0.0) as usize;
        let mut cols: Vec<usize> = (first..image.n_cols).take_while(|&c| centre(c) < xb).collect();
        if cols.is_empty() {
            let xc = (xa + xb) / 2.0;
            let c = ((xc - image.x_start) / image.x_step).floor();
            if c < 0.0 || c >= image.n_cols as f64 {
                continue;
            }
            cols.push(c as usize);
        }
        pooled.iter_mut().for_each(|p| *p = 0.0);
        for &c in &cols {
            for (p, &v) in pooled.iter_mut().zip(image.column(c)) {
                *p = f64::max(*p, v);
            }
        }
        for (j, row) in rows.iter().enumerate() {
            let v = match *row {
                Rows::Max(lo, hi) => pooled[lo..hi].iter().copied().fold(0.0, f64::max),
                Rows::Lerp(a, b, t) => pooled[a] * (1.0 - t) + pooled[b] * t,
            };
            let px = (j * w + i) * 3;
            out[px..px + 3].copy_from_slice(&scale.color(v));
        }
    }
    out
}

/// A vertical colour bar for `scale`, in dB.
fn draw_colorbar<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, scale: &DbScale, top: u32) -> DrawResult<DB> {
    let area = area.margin(top, 0, 0, 0);
    let mut chart = ChartBuilder::on(&area)
        .margin(8)
        .x_label_area_size(42)
        .y_label_area_size(0)
        .right_y_label_area_size(46)
        .build_cartesian_2d(0.0..1.0, -scale.range_db..0.0)?;
    let (px, py) = chart.plotting_area().get_pixel_range();
    let (w, h) = ((px.end - px.start).max(1) as usize, (py.end - py.start).max(1) as usize);
    let mut pixels = vec![0u8; w * h * 3];
    for j in 0..h {
        let db = -(j as f64 + 0.5) / h as f64 * scale.range_db;
        let c = scale.color(scale.reference * 10f64.powf(db / 20.0));
        for i in 0..w {
            pixels[(j * w + i) * 3..(j * w + i) * 3 + 3].copy_from_slice(&c);
        }
    }
    if let Some(bitmap) = BitMapElement::<(i32, i32)>::with_owned_buffer((0, 0), (w as u32, h as u32), pixels) {
        chart.plotting_area().strip_coord_spec().draw(&bitmap)?;
    }
    chart
        .configure_mesh()
        .disable_mesh()
        .disable_x_axis()
        .y_desc("dB")
        .y_labels(5)
        .y_label_formatter(&|d| format!("{d:.0}"))
        .label_style(font(13))
        .axis_desc_style(font(14))
        .draw()?;
    Ok(())
}

/// Width of the colour bar's area.
const COLORBAR_WIDTH: i32 = 78;

fn seconds_label(x: &f64) -> String {
    let r = (x * 10.0).round() / 10.0;
    if (r - r.round()).abs() < 1e-9 {
        format!("{r:.0}")
    } else {
        format!("{r:.1}")
    }
}

/// How a [`TfPanel`]'s x axis reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XUnit {
    /// Seconds (spectrograms).
    Seconds,
    /// Milliseconds (a template's frames).
    Milliseconds,
    /// MIDI pitches, labelled at each C (a dictionary's columns).
    Pitch,
}

/// One image of a [`TfFigure`].
#[derive(Debug, Clone)]
pub struct TfPanel {
    /// The caption above it (may be empty).
    pub caption: String,
    /// The values, x in [`unit`](Self::unit)s.
    pub image: TfImage,
    /// The x range shown. Default: the image's. (A narrower range hides,
    /// for instance, frames at an excerpt's cut computed with the audio
    /// around it.)
    pub x_range: Range<f64>,
    /// How the x axis reads.
    pub unit: XUnit,
    /// A dashed white line through these (x, Hz) points, with its legend.
    pub guide: Option<(String, Vec<(f64, f64)>)>,
}

impl TfPanel {
    /// A panel of `image` over its whole x range, without a guide.
    pub fn new(caption: impl Into<String>, image: TfImage, unit: XUnit) -> Self {
        TfPanel { caption: caption.into(), x_range: image.x_range(), image, unit, guide: None }
    }
}

/// Time-frequency images side by side on a log-frequency axis and one dB
/// colour scale, with a colour bar: a spectrogram
/// ([`TfFigure::spectrogram`]), a few templates as in the paper's figure 3
/// ([`TfFigure::templates`]), a dictionary at a glance
/// ([`TfFigure::template_overview`]), a note beside its rank-one
/// approximations ([`TfFigure::rank_one`]).
#[derive(Debug, Clone)]
pub struct TfFigure {
    /// The panels, left to right.
    pub panels: Vec<TfPanel>,
    /// Frequencies shown, in Hz.
    pub freq: Range<f64>,
    /// Dynamic range in dB.
    pub range_db: f64,
    /// The value shown as 0 dB. `None`: the largest value of all panels.
    pub reference: Option<f64>,
    /// The title.
    pub title: String,
    /// Width and height in pixels.
    pub size: (u32, u32),
}

impl TfFigure {
    /// The magnitude spectrogram `image` (x in seconds) in dB on a
    /// log-frequency axis: [`DEFAULT_FMIN`] to Nyquist, [`DEFAULT_RANGE_DB`],
    /// 1200 × 560 pixels.
    pub fn spectrogram(image: TfImage, title: impl Into<String>) -> Self {
        let nyquist = image.bin_hz * (image.n_bins.max(2) - 1) as f64;
        TfFigure {
            panels: vec![TfPanel::new("", image, XUnit::Seconds)],
            freq: DEFAULT_FMIN..nyquist,
            range_db: DEFAULT_RANGE_DB,
            reference: None,
            title: title.into(),
            size: (1200, 560),
        }
    }

    /// The templates of `pitches` in `dictionary`, each its F × τ image
    /// (the paper's figure 3), up to 10 kHz, 300 pixels wide each; errors
    /// for a pitch the dictionary does not have.
    pub fn templates(dictionary: &TemplateDictionary, pitches: &[u8], title: impl Into<String>) -> Result<Self> {
        let t = &dictionary.templates;
        let stft = &dictionary.params.stft;
        let mut panels = Vec::new();
        for &p in pitches {
            let q = dictionary.pitches.iter().position(|&x| x == p).ok_or_else(|| {
                Error::invalid_input(format!("the dictionary has no template for pitch {p} ({})", note_name(p)))
            })?;
            let image = TfImage {
                values: t.template(q).iter().map(|&x| x as f64).collect(),
                n_bins: t.n_bins,
                n_cols: t.tau,
                bin_hz: stft.sample_rate as f64 / stft.n_fft as f64,
                x_start: 0.0,
                x_step: stft.hop_seconds() * 1000.0,
            };
            panels.push(TfPanel::new(format!("{} (MIDI {p})", note_name(p)), image, XUnit::Milliseconds));
        }
        if panels.is_empty() {
            return Err(Error::invalid_input("no templates to show"));
        }
        let width = (300 * panels.len() as u32 + COLORBAR_WIDTH as u32).max(600);
        Ok(TfFigure {
            panels,
            freq: DEFAULT_FMIN..10_000.0,
            range_db: DEFAULT_RANGE_DB,
            reference: None,
            title: title.into(),
            size: (width, 520),
        })
    }

    /// Every template's spectrum (summed over its τ frames) as one column
    /// per pitch, each scaled to its own maximum so that quiet high notes
    /// are as visible as loud low ones (60 dB shown), with the
    /// equal-tempered fundamentals as a guide; 1200 × 620 pixels. Missing
    /// pitches between the lowest and highest show as white columns.
    pub fn template_overview(dictionary: &TemplateDictionary, title: impl Into<String>) -> Result<Self> {
        let t = &dictionary.templates;
        let stft = &dictionary.params.stft;
        let (lo, hi) = match (dictionary.pitches.iter().min(), dictionary.pitches.iter().max()) {
            (Some(&lo), Some(&hi)) => (lo, hi),
            _ => return Err(Error::invalid_input("the dictionary has no templates")),
        };
        let n_cols = (hi - lo) as usize + 1;
        let mut values = vec![0.0; n_cols * t.n_bins];
        for (q, &p) in dictionary.pitches.iter().enumerate() {
            let c = (p - lo) as usize;
            let col = &mut values[c * t.n_bins..(c + 1) * t.n_bins];
            for i in 0..t.tau {
                for (v, &x) in col.iter_mut().zip(t.slice(q, i)) {
                    *v += x as f64;
                }
            }
            let m = col.iter().copied().fold(0.0, f64::max);
            if m > 0.0 {
                col.iter_mut().for_each(|v| *v /= m);
            }
        }
        let image = TfImage {
            values,
            n_bins: t.n_bins,
            n_cols,
            bin_hz: stft.sample_rate as f64 / stft.n_fft as f64,
            x_start: lo as f64 - 0.5,
            x_step: 1.0,
        };
        let mut panel = TfPanel::new("", image, XUnit::Pitch);
        let guide = (lo..=hi).map(|p| (p as f64, midi_frequency(p as f64))).collect();
        panel.guide = Some(("equal-tempered fundamental".into(), guide));
        Ok(TfFigure {
            panels: vec![panel],
            freq: DEFAULT_FMIN..10_000.0,
            range_db: 60.0,
            reference: Some(1.0),
            title: title.into(),
            size: (1200, 620),
        })
    }

    /// Spectrograms side by side (x in seconds) on one scale, up to
    /// 10 kHz: a note and its best rank-one approximations; 1200 × 520
    /// pixels.
    pub fn rank_one(panels: Vec<(String, TfImage)>, title: impl Into<String>) -> Self {
        TfFigure {
            panels: panels.into_iter().map(|(c, im)| TfPanel::new(c, im, XUnit::Seconds)).collect(),
            freq: DEFAULT_FMIN..10_000.0,
            range_db: DEFAULT_RANGE_DB,
            reference: None,
            title: title.into(),
            size: (1200, 520),
        }
    }
}

/// The x-axis labels of a C, as `note_name`, else nothing.
fn octave_label(x: &f64) -> String {
    let p = x.round();
    if (x - p).abs() < 1e-6 && (0.0..=127.0).contains(&p) && p as u8 % 12 == 0 {
        note_name(p as u8)
    } else {
        String::new()
    }
}

fn milliseconds_label(x: &f64) -> String {
    format!("{x:.0}")
}

impl Figure for TfFigure {
    fn size(&self) -> (u32, u32) {
        self.size
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        root.fill(&WHITE)?;
        let root = root.titled(&self.title, font(20))?;
        let (w, _) = root.dim_in_pixel();
        let (panels, bar) = root.split_horizontally(w as i32 - COLORBAR_WIDTH);
        let reference = self.reference.unwrap_or_else(|| self.panels.iter().map(|p| p.image.max()).fold(0.0, f64::max));
        let scale = DbScale { reference, range_db: self.range_db };
        let areas = panels.split_evenly((1, self.panels.len().max(1)));
        let labels = (12 / self.panels.len().max(1)).max(4);
        for (k, (panel, area)) in self.panels.iter().zip(&areas).enumerate() {
            let x = match panel.unit {
                XUnit::Seconds => {
                    XAxis { range: panel.x_range.clone(), desc: "time (s)", format: &seconds_label, labels }
                }
                XUnit::Milliseconds => {
                    XAxis { range: panel.x_range.clone(), desc: "time (ms)", format: &milliseconds_label, labels: 5 }
                }
                // A tick per pitch, a label per C.
                XUnit::Pitch => {
                    XAxis { range: panel.x_range.clone(), desc: "template (pitch)", format: &octave_label, labels: 100 }
                }
            };
            let mut chart = draw_tf_panel(area, &panel.image, &x, &self.freq, &scale, &panel.caption, k == 0)?;
            if let Some((label, points)) = &panel.guide {
                chart
                    .draw_series(DashedLineSeries::new(points.iter().copied(), 6, 6, WHITE.stroke_width(1)))?
                    .label(label)
                    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], WHITE.stroke_width(1)));
                chart
                    .configure_series_labels()
                    .position(SeriesLabelPosition::UpperLeft)
                    .background_style(RGBColor(68, 1, 84))
                    .border_style(WHITE)
                    .label_font(font(13).color(&WHITE))
                    .draw()?;
            }
        }
        // Captioned panels have a caption row the bar does not: align it.
        let captioned = self.panels.iter().any(|p| !p.caption.is_empty());
        draw_colorbar(&bar, &scale, if captioned { 26 } else { 0 })
    }
}

// ---------------------------------------------------------------------------
// Activations and notes.

/// The activations of a few pitches with the onset rule's adaptive
/// threshold `s[t] + δ` and the onsets it detected (the paper's figures
/// 4-5), and, when given, the reference onsets.
#[derive(Debug, Clone)]
pub struct ActivationsFigure {
    /// One panel per pitch: the pitch, its scaled activation, `s + δ`, the
    /// detected onsets' times and the reference onsets' times.
    pub panels: Vec<ActivationPanel>,
    /// Seconds between frames, and the time of frame 0.
    pub hop_seconds: f64,
    /// Time of frame 0 in seconds.
    pub start_seconds: f64,
    /// δ, for the legend.
    pub threshold: f64,
    /// Whether reference onsets are shown.
    pub has_reference: bool,
    /// The title.
    pub title: String,
    /// Width and height in pixels. Default 1200 × (60 + 170 per panel).
    pub size: (u32, u32),
}

/// One pitch of an [`ActivationsFigure`].
#[derive(Debug, Clone)]
pub struct ActivationPanel {
    /// MIDI pitch.
    pub pitch: u8,
    /// The activation as the detector sees it (scaled).
    pub activation: Vec<f64>,
    /// The adaptive threshold `s[t] + δ`.
    pub threshold: Vec<f64>,
    /// Onsets of the detected notes, seconds.
    pub onsets: Vec<f64>,
    /// Onsets of the reference's notes of this pitch, seconds (empty
    /// without a reference).
    pub reference_onsets: Vec<f64>,
}

impl ActivationsFigure {
    /// The panels of `pitches` (rows of `activations`), with the scaling
    /// and threshold of `detector` and the onsets of `notes`. Without
    /// `pitches`, the [`DEFAULT_PANELS`] pitches with the most notes (or,
    /// without notes, the largest activations), low to high.
    pub fn new(
        activations: &Activations,
        detector: &OnsetDetector,
        notes: &[Note],
        reference: Option<&[Note]>,
        pitches: Option<&[u8]>,
        title: impl Into<String>,
    ) -> Result<Self> {
        let chosen = match pitches {
            Some(p) => p.to_vec(),
            None => busiest_pitches(activations, notes, DEFAULT_PANELS),
        };
        if chosen.is_empty() {
            return Err(Error::invalid_input("no pitches to show"));
        }
        let scale = detector.scale_factor(activations);
        let mut panels = Vec::new();
        for &p in &chosen {
            let q = activations.pitches.iter().position(|&x| x == p).ok_or_else(|| {
                Error::invalid_input(format!("the model has no template for pitch {p} ({})", note_name(p)))
            })?;
            let row: Vec<f64> = (0..activations.values.cols).map(|t| activations.values.get(q, t) * scale).collect();
            let threshold =
                moving_average(&row, detector.half_window).into_iter().map(|s| s + detector.threshold).collect();
            let onsets = notes.iter().filter(|n| n.pitch == p).map(|n| n.onset).collect();
            let reference_onsets = reference.unwrap_or(&[]).iter().filter(|n| n.pitch == p).map(|n| n.onset).collect();
            panels.push(ActivationPanel { pitch: p, activation: row, threshold, onsets, reference_onsets });
        }
        let height = 60 + 170 * panels.len() as u32;
        Ok(ActivationsFigure {
            panels,
            hop_seconds: activations.hop_seconds,
            start_seconds: activations.start_seconds,
            threshold: detector.threshold,
            has_reference: reference.is_some(),
            title: title.into(),
            size: (1200, height),
        })
    }
}

/// Panels an [`ActivationsFigure`] shows when no pitches are asked for.
pub const DEFAULT_PANELS: usize = 4;

/// The `k` pitches with the most notes (ties and note-less recordings: the
/// largest activation), sorted low to high.
fn busiest_pitches(activations: &Activations, notes: &[Note], k: usize) -> Vec<u8> {
    let mut ranked: Vec<(usize, f64, u8)> = activations
        .pitches
        .iter()
        .enumerate()
        .map(|(q, &p)| {
            let count = notes.iter().filter(|n| n.pitch == p).count();
            let peak = (0..activations.values.cols).map(|t| activations.values.get(q, t)).fold(0.0, f64::max);
            (count, peak, p)
        })
        .collect();
    ranked.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.total_cmp(&a.1)));
    let mut chosen: Vec<u8> = ranked.into_iter().take(k).map(|(_, _, p)| p).collect();
    chosen.sort_unstable();
    chosen
}

impl Figure for ActivationsFigure {
    fn size(&self) -> (u32, u32) {
        self.size
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        root.fill(&WHITE)?;
        let root = root.titled(&self.title, font(20))?;
        let areas = root.split_evenly((self.panels.len(), 1));
        let n = self.panels.iter().map(|p| p.activation.len()).max().unwrap_or(0);
        let time = |t: usize| self.start_seconds + t as f64 * self.hop_seconds;
        let x_range = self.start_seconds..time(n.max(1));
        let threshold_color = RGBColor(230, 120, 0);
        let onset_color = RGBColor(200, 0, 0);
        for (k, (panel, area)) in self.panels.iter().zip(&areas).enumerate() {
            let last = k + 1 == self.panels.len();
            let top = panel.activation.iter().chain(&panel.threshold).copied().fold(0.0, f64::max).max(1e-12) * 1.12;
            let mut chart = ChartBuilder::on(area)
                .margin(6)
                .x_label_area_size(if last { 40 } else { 22 })
                .y_label_area_size(62)
                .caption(
                    format!(
                        "{} (MIDI {}): {} notes detected{}",
                        note_name(panel.pitch),
                        panel.pitch,
                        panel.onsets.len(),
                        if self.has_reference {
                            format!(
                                ", {} in the reference",
                                panel.reference_onsets.iter().filter(|o| x_range.contains(o)).count()
                            )
                        } else {
                            String::new()
                        }
                    ),
                    font(15),
                )
                .build_cartesian_2d(x_range.clone(), 0.0..top)?;
            let mut mesh = chart.configure_mesh();
            mesh.light_line_style(WHITE)
                .bold_line_style(RGBColor(225, 225, 225))
                .y_labels(4)
                .y_desc("activation")
                .x_labels(14)
                .x_label_formatter(&seconds_label)
                .y_label_formatter(&|y| format!("{y:.2}"))
                .label_style(font(12))
                .axis_desc_style(font(13));
            if last {
                mesh.x_desc("time (s)");
            }
            mesh.draw()?;
            chart
                .draw_series(LineSeries::new(
                    panel.activation.iter().enumerate().map(|(t, &v)| (time(t), v)),
                    RGBColor(31, 90, 180).stroke_width(1),
                ))?
                .label("activation h (scaled)")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RGBColor(31, 90, 180).stroke_width(2)));
            chart
                .draw_series(LineSeries::new(
                    panel.threshold.iter().enumerate().map(|(t, &v)| (time(t), v)),
                    threshold_color.stroke_width(1),
                ))?
                .label(format!("threshold s + δ (δ = {})", self.threshold))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], threshold_color.stroke_width(2)));
            let value_at = |onset: f64| {
                let t = ((onset - self.start_seconds) / self.hop_seconds).round().max(0.0) as usize;
                panel.activation.get(t).copied().unwrap_or(0.0)
            };
            chart
                .draw_series(panel.onsets.iter().map(|&o| Circle::new((o, value_at(o)), 4, onset_color.filled())))?
                .label("detected onset")
                .legend(move |(x, y)| Circle::new((x + 10, y), 4, onset_color.filled()));
            if self.has_reference {
                chart
                    .draw_series(
                        panel
                            .reference_onsets
                            .iter()
                            .filter(|o| x_range.contains(o))
                            .map(|&o| TriangleMarker::new((o, top * 0.94), 6, BLACK.filled())),
                    )?
                    .label("reference onset")
                    .legend(|(x, y)| TriangleMarker::new((x + 10, y), 6, BLACK.filled()));
            }
            if k == 0 {
                draw_legend(&mut chart, 12)?;
            }
        }
        Ok(())
    }
}

/// What became of each note when a transcription is matched to a
/// reference ([`match_notes`], onset rule of mir_eval).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoteOutcome {
    /// An estimated note matched to a reference note.
    Hit,
    /// A reference note no estimated note matched.
    Missed,
    /// An estimated note matched to no reference note.
    False,
}

/// A piano roll of a transcription, against a reference when there is one:
/// reference notes in light grey, hits in green, false notes in blue and
/// missed notes in red.
#[derive(Debug, Clone)]
pub struct PianoRollFigure {
    /// Each note with what became of it: hits and false notes are
    /// estimated notes, misses reference notes.
    pub notes: Vec<(Note, NoteOutcome)>,
    /// The reference notes (drawn underneath), if any.
    pub reference: Option<Vec<Note>>,
    /// The title; the scores are added below it when there is a reference.
    pub title: String,
    /// Onset precision, recall and F-measure, with a reference.
    pub scores: Option<(f64, f64, f64)>,
    /// Width and height in pixels. Default 1200 × 640.
    pub size: (u32, u32),
}

impl PianoRollFigure {
    /// Matches `estimate` to `reference` (when given) with `params`.
    pub fn new(estimate: &[Note], reference: Option<&[Note]>, params: &MatchParams, title: impl Into<String>) -> Self {
        let mut notes = Vec::new();
        let mut scores = None;
        match reference {
            Some(reference) => {
                let pairs = match_notes(reference, estimate, params);
                let mut matched_ref = vec![false; reference.len()];
                let mut matched_est = vec![false; estimate.len()];
                for &(i, j) in &pairs {
                    matched_ref[i] = true;
                    matched_est[j] = true;
                }
                for (n, &m) in estimate.iter().zip(&matched_est) {
                    notes.push((*n, if m { NoteOutcome::Hit } else { NoteOutcome::False }));
                }
                for (n, &m) in reference.iter().zip(&matched_ref) {
                    if !m {
                        notes.push((*n, NoteOutcome::Missed));
                    }
                }
                let s = precision_recall_f1_overlap(reference, estimate, params);
                scores = Some((s.precision, s.recall, s.f_measure));
            }
            None => notes.extend(estimate.iter().map(|n| (*n, NoteOutcome::Hit))),
        }
        PianoRollFigure {
            notes,
            reference: reference.map(<[Note]>::to_vec),
            title: title.into(),
            scores,
            size: (1200, 640),
        }
    }

    /// How many notes had `outcome`.
    pub fn count(&self, outcome: NoteOutcome) -> usize {
        self.notes.iter().filter(|(_, o)| *o == outcome).count()
    }
}

impl Figure for PianoRollFigure {
    fn size(&self) -> (u32, u32) {
        self.size
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        root.fill(&WHITE)?;
        let mut title = self.title.clone();
        if let Some((p, r, f)) = self.scores {
            title = format!("{title}   onset P {:.1}%  R {:.1}%  F {:.1}%", 100.0 * p, 100.0 * r, 100.0 * f);
        }
        let root = root.titled(&title, font(20))?;
        let all = self.notes.iter().map(|(n, _)| n).chain(self.reference.iter().flatten());
        let (mut t0, mut t1, mut p0, mut p1) = (f64::INFINITY, f64::NEG_INFINITY, 127u8, 0u8);
        for n in all {
            t0 = t0.min(n.onset);
            t1 = t1.max(n.offset);
            p0 = p0.min(n.pitch);
            p1 = p1.max(n.pitch);
        }
        if t0 > t1 {
            (t0, t1, p0, p1) = (0.0, 1.0, 60, 72);
        }
        let pad = (t1 - t0) * 0.01;
        let y_range = (p0 as f64 - 1.5)..(p1 as f64 + 1.5);
        let mut chart = ChartBuilder::on(&root)
            .margin(10)
            .x_label_area_size(42)
            .y_label_area_size(56)
            .build_cartesian_2d((t0 - pad).max(0.0)..t1 + pad, y_range.clone())?;
        chart
            .configure_mesh()
            .light_line_style(WHITE)
            .bold_line_style(RGBColor(228, 228, 228))
            .x_desc("time (s)")
            .y_desc("pitch")
            .x_labels(14)
            .y_labels(((p1 - p0) as usize + 3).min(40))
            .x_label_formatter(&seconds_label)
            .y_label_formatter(&|y| {
                // Every C, and every pitch when the range is at most two octaves.
                let p = y.round();
                let whole = (y - p).abs() < 1e-6 && (0.0..=127.0).contains(&p);
                if whole && ((p as u8) % 12 == 0 || p1 - p0 <= 24) {
                    note_name(p as u8)
                } else {
                    String::new()
                }
            })
            .label_style(font(12))
            .axis_desc_style(font(14))
            .draw()?;
        let bar = |n: &Note, inset: f64| {
            [(n.onset, n.pitch as f64 - inset), (n.offset.max(n.onset + 0.02), n.pitch as f64 + inset)]
        };
        let grey = RGBColor(205, 205, 205);
        if let Some(reference) = &self.reference {
            chart
                .draw_series(reference.iter().map(|n| Rectangle::new(bar(n, 0.42), grey.filled())))?
                .label(format!("reference ({})", reference.len()))
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 18, y + 5)], grey.filled()));
        }
        let kinds: [(NoteOutcome, RGBColor, &str); 3] = if self.reference.is_some() {
            [
                (NoteOutcome::Missed, RGBColor(215, 40, 40), "missed"),
                (NoteOutcome::Hit, RGBColor(20, 150, 60), "hit"),
                (NoteOutcome::False, RGBColor(40, 90, 220), "false note"),
            ]
        } else {
            [
                (NoteOutcome::Missed, RGBColor(215, 40, 40), "missed"),
                (NoteOutcome::Hit, RGBColor(40, 90, 220), "note"),
                (NoteOutcome::False, RGBColor(40, 90, 220), "false note"),
            ]
        };
        for (outcome, color, name) in kinds {
            let count = self.count(outcome);
            if count == 0 {
                continue;
            }
            let inset = if outcome == NoteOutcome::Missed { 0.42 } else { 0.3 };
            chart
                .draw_series(
                    self.notes
                        .iter()
                        .filter(|(_, o)| *o == outcome)
                        .map(|(n, _)| Rectangle::new(bar(n, inset), color.filled())),
                )?
                .label(format!("{name} ({count})"))
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 18, y + 5)], color.filled()));
        }
        draw_legend(&mut chart, 13)
    }
}

/// The legend of a chart's labelled series, in its upper right corner.
fn draw_legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    font_size: u32,
) -> DrawResult<DB> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(RGBColor(160, 160, 160))
        .label_font(font(font_size))
        .draw()
}

// ---------------------------------------------------------------------------
// Blind decompositions.

/// The factors of a blind decomposition: W as an image (one column per
/// template frame, components side by side, labelled by their estimated
/// pitch) and H as stacked curves.
#[derive(Debug, Clone)]
pub struct DecompositionFigure {
    /// W: column `q·τ + i` is slice `i` of component `q`; x = component.
    pub w_image: TfImage,
    /// H, one row per component, each scaled to its maximum over the
    /// frames whose whole template lies in the excerpt (with τ > 1 the
    /// last τ − 1 frames' activations, which model only the first slices,
    /// can spike; they are clipped at 1).
    pub activations: Vec<Vec<f64>>,
    /// τ, for the caption.
    pub tau: usize,
    /// Component labels (estimated pitch).
    pub labels: Vec<String>,
    /// Seconds between frames and the time of frame 0.
    pub hop_seconds: f64,
    /// Time of frame 0 in seconds.
    pub start_seconds: f64,
    /// Frequencies shown, in Hz. Default [`DEFAULT_FMIN`] to 10 kHz.
    pub freq: Range<f64>,
    /// Dynamic range in dB. Default 60 (each component on its own scale).
    pub range_db: f64,
    /// The title.
    pub title: String,
    /// Width and height in pixels. Default 1200 × 620.
    pub size: (u32, u32),
}

impl DecompositionFigure {
    /// The figure of `d` (components in their order), with bins `bin_hz`
    /// apart and frames `hop_seconds` apart from `start_seconds`.
    pub fn new(d: &Decomposition, bin_hz: f64, hop_seconds: f64, start_seconds: f64, title: impl Into<String>) -> Self {
        let t = &d.templates;
        let r = t.n_templates;
        let mut values = Vec::with_capacity(t.data.len());
        for q in 0..r {
            // Each component on its own scale (see `range_db`).
            let m = t.template(q).iter().copied().fold(0.0, f64::max);
            values.extend(t.template(q).iter().map(|&x| if m > 0.0 { x / m } else { 0.0 }));
        }
        let w_image =
            TfImage { values, n_bins: t.n_bins, n_cols: r * t.tau, bin_hz, x_start: 0.5, x_step: 1.0 / t.tau as f64 };
        let n = d.activations.cols;
        let whole = (n + 1).saturating_sub(t.tau).max(1);
        let activations = (0..r)
            .map(|q| {
                let row: Vec<f64> = (0..n).map(|c| d.activations.get(q, c)).collect();
                let m = row[..whole.min(n)].iter().copied().fold(0.0, f64::max);
                row.into_iter().map(|x| if m > 0.0 { (x / m).min(1.0) } else { 0.0 }).collect()
            })
            .collect();
        let labels = (0..r)
            .map(|q| match estimate_fundamental(&d.spectrum(q), bin_hz) {
                Some(f0) => format!("{} {}", q + 1, note_name(frequency_midi(f0).round().clamp(0.0, 127.0) as u8)),
                None => format!("{}", q + 1),
            })
            .collect();
        DecompositionFigure {
            w_image,
            activations,
            tau: t.tau,
            labels,
            hop_seconds,
            start_seconds,
            freq: DEFAULT_FMIN..10_000.0,
            range_db: 60.0,
            title: title.into(),
            size: (1200, 620),
        }
    }
}

impl Figure for DecompositionFigure {
    fn size(&self) -> (u32, u32) {
        self.size
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        root.fill(&WHITE)?;
        let root = root.titled(&self.title, font(20))?;
        let (w, _) = root.dim_in_pixel();
        let r = self.activations.len();
        let w_width = ((w as i32 - COLORBAR_WIDTH) * 2 / 5).max(200);
        let (left, rest) = root.split_horizontally(w_width);
        let (bar, right) = rest.split_horizontally(COLORBAR_WIDTH);
        let scale = DbScale { reference: 1.0, range_db: self.range_db };
        let labels = self.labels.clone();
        let name = move |x: &f64| {
            let q = x.round();
            if (x - q).abs() < 1e-6 && q >= 1.0 && q as usize <= labels.len() {
                labels[q as usize - 1].clone()
            } else {
                String::new()
            }
        };
        let x = XAxis { range: 0.5..r as f64 + 0.5, desc: "component", format: &name, labels: r + 1 };
        draw_tf_panel(&left, &self.w_image, &x, &self.freq, &scale, "templates W", true)?;
        draw_colorbar(&bar, &scale, 26)?;

        let n = self.activations.iter().map(Vec::len).max().unwrap_or(1);
        let time = |t: usize| self.start_seconds + t as f64 * self.hop_seconds;
        let mut chart = ChartBuilder::on(&right)
            .margin(8)
            .caption(
                if self.tau > 1 {
                    format!("activations H (each scaled to its maximum before the last {} frames)", self.tau - 1)
                } else {
                    "activations H (each scaled to its maximum)".to_string()
                },
                font(16),
            )
            .x_label_area_size(42)
            .y_label_area_size(60)
            .build_cartesian_2d(self.start_seconds..time(n), 0.5..r as f64 + 0.5)?;
        let labels = self.labels.clone();
        chart
            .configure_mesh()
            .light_line_style(WHITE)
            .bold_line_style(RGBColor(230, 230, 230))
            .x_desc("time (s)")
            .x_labels(10)
            .y_labels(r + 1)
            .x_label_formatter(&seconds_label)
            .y_label_formatter(&|y| {
                let q = y.round();
                if (y - q).abs() < 1e-6 && q >= 1.0 && q as usize <= labels.len() {
                    labels[q as usize - 1].clone()
                } else {
                    String::new()
                }
            })
            .label_style(font(12))
            .axis_desc_style(font(14))
            .draw()?;
        for (q, row) in self.activations.iter().enumerate() {
            let color = Palette99::pick(q).to_rgba();
            let base = q as f64 + 1.0 - 0.45;
            chart.draw_series(LineSeries::new(
                row.iter().enumerate().map(|(t, &v)| (time(t), base + 0.9 * v)),
                color.stroke_width(1),
            ))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn note_names_are_scientific() {
        assert_eq!(note_name(60), "C4");
        assert_eq!(note_name(21), "A0");
        assert_eq!(note_name(108), "C8");
        assert_eq!(note_name(61), "C#4");
    }

    #[test]
    fn the_bundled_font_parses() {
        register_font();
        let style = font(12);
        let (w, h) = style.font.box_size("Frequency (Hz) δ").expect("the font lays out text");
        assert!(w > 50 && h > 5, "{w}×{h}");
    }

    #[test]
    fn db_scale_clips_and_maps_to_viridis_ends() {
        let s = DbScale { reference: 2.0, range_db: 60.0 };
        assert_eq!(s.db(2.0), 0.0);
        assert!((s.db(0.2) + 20.0).abs() < 1e-12);
        assert_eq!(s.db(0.0), -60.0);
        assert_eq!(s.db(1e-30), -60.0);
        assert_eq!(s.color(2.0), [254, 232, 37]);
        assert_eq!(s.color(0.0), [68, 1, 84]);
    }

    #[test]
    fn pixels_pool_columns_by_their_maximum() {
        // One loud column among many quiet ones survives downsampling.
        let n_cols = 1000;
        let mut values = vec![1e-3; n_cols * 4];
        values[500 * 4 + 2] = 1.0;
        let image = TfImage { values, n_bins: 4, n_cols, bin_hz: 100.0, x_start: 0.0, x_step: 0.01 };
        let scale = DbScale { reference: 1.0, range_db: 80.0 };
        let px = tf_pixels(&image, &(0.0..10.0), &(50.0..400.0), &scale, 50, 20);
        let bright = px.chunks(3).filter(|c| *c == [254, 232, 37]).count();
        assert!(bright > 0, "the loud bin is visible");
        // Outside the image's columns: white.
        let px = tf_pixels(&image, &(-10.0..0.0), &(50.0..400.0), &scale, 10, 5);
        assert!(px.iter().all(|&b| b == 255));
    }

    #[test]
    fn frequency_ticks_are_one_two_five() {
        assert_eq!(frequency_ticks(&(25.0..11025.0)), vec![50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0]);
    }

    #[test]
    fn extensions_choose_the_format() {
        assert_eq!(ImageFormat::from_path(Path::new("a.PNG")).unwrap(), ImageFormat::Png);
        assert_eq!(ImageFormat::from_path(Path::new("a/b.svg")).unwrap(), ImageFormat::Svg);
        let e = ImageFormat::from_path(Path::new("a.jpg")).unwrap_err();
        assert!(e.to_string().contains("a.jpg"), "{e}");
    }

    #[test]
    fn piano_roll_sorts_notes_into_hits_misses_and_false_notes() {
        let n = |onset: f64, pitch: u8| Note { onset, offset: onset + 0.5, pitch, velocity: 80 };
        let reference = [n(0.0, 60), n(1.0, 62), n(2.0, 64)];
        let estimate = [n(0.01, 60), n(1.0, 63), n(2.03, 64), n(3.0, 65)];
        let fig = PianoRollFigure::new(&estimate, Some(&reference), &MatchParams::onset_only(), "t");
        assert_eq!(
            (fig.count(NoteOutcome::Hit), fig.count(NoteOutcome::Missed), fig.count(NoteOutcome::False)),
            (2, 1, 2)
        );
        let (p, r, f) = fig.scores.unwrap();
        assert!((p - 0.5).abs() < 1e-12 && (r - 2.0 / 3.0).abs() < 1e-12 && (f - 4.0 / 7.0).abs() < 1e-12);
        let png = render(&fig, ImageFormat::Png).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let svg = String::from_utf8(render(&fig, ImageFormat::Svg).unwrap()).unwrap();
        assert!(svg.contains("<svg") && svg.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn png_with_few_colours_uses_a_palette() {
        let rgb: Vec<u8> = (0..64 * 32).flat_map(|i| if i % 3 == 0 { [255, 0, 0] } else { [0, 0, 255] }).collect();
        let bytes = encode_png(&rgb, 64, 32).unwrap();
        let decoder = png::Decoder::new(std::io::Cursor::new(&bytes));
        let reader = decoder.read_info().unwrap();
        assert_eq!(reader.info().color_type, png::ColorType::Indexed);
        let many: Vec<u8> = (0..64 * 32 * 3u64).map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8).collect();
        let bytes = encode_png(&many, 64, 32).unwrap();
        let mut reader = png::Decoder::new(std::io::Cursor::new(&bytes)).read_info().unwrap();
        assert_eq!(reader.info().color_type, png::ColorType::Rgb);
        let mut buf = vec![0; reader.output_buffer_size()];
        reader.next_frame(&mut buf).unwrap();
        assert_eq!(buf, many);
    }
}
