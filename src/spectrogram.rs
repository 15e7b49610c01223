//! Magnitude short-time Fourier transform, identical to `scipy.signal.stft`.
//!
//! The paper's code computes
//! `scipy.signal.stft(x, fs=44100, nperseg=4096, nfft=8192, noverlap=4096-882)`
//! and keeps the magnitude. [`Stft`] computes exactly the same numbers (to
//! floating-point round-off, in `f64`): the magnitudes of
//! `scipy.signal.stft(x, fs, window='hann', nperseg=win_length,
//! noverlap=win_length-hop_length, nfft=n_fft, detrend=False,
//! return_onesided=True, boundary='zeros', padded=True, scaling='spectrum')`.
//! The parameters use librosa's names ([`StftConfig`]); the defaults are the
//! paper's. The STFT itself is the classical one of Allen & Rabiner ("A unified
//! approach to short-time Fourier analysis and synthesis", Proc. IEEE 65(11),
//! 1977); the padding and scaling conventions are those documented for
//! `scipy.signal.stft` and `scipy.signal.ShortTimeFFT` in the SciPy reference.
//!
//! # Window
//!
//! A *periodic* Hann window of `win_length` = N samples (scipy's
//! `get_window('hann', N)`, i.e. `fftbins=True`):
//! `w[n] = 0.5 - 0.5 cos(2πn/N)` for `n = 0 .. N-1`.
//!
//! # Centring and padding
//!
//! * The signal of `L` samples is padded with `win_length / 2` zeros at both
//!   ends (scipy's `boundary='zeros'`).
//! * It is then zero-padded at the end so that `(padded_len - win_length)` is a
//!   multiple of `hop_length` (scipy's `padded=True`):
//!   `nadd = (-(len - win_length) mod hop) mod win_length`.
//! * Frame `t` is the segment of `win_length` samples starting at `t · hop` in
//!   the padded signal, so it is *centred* on sample `t · hop` of the original
//!   signal, i.e. at time `t · hop / sample_rate` ([`Spectrogram::frame_time`]).
//! * The number of frames is `(padded_len - win_length) / hop + 1`, which is
//!   `ceil(L / hop) + 1` for `L ≥ 1` (1501 frames for 30 s at 44.1 kHz with
//!   hop 882; [`Stft::n_frames`]).
//! * Each segment is multiplied by the window (no detrending) and zero-padded
//!   at its end to `n_fft` samples before a real FFT of size `n_fft`; the
//!   one-sided spectrum has `n_fft / 2 + 1` bins (4097 by default), bin `f`
//!   being at `f · sample_rate / n_fft` Hz ([`Spectrogram::bin_frequency`]).
//!
//! Two edge cases differ from (or are not defined by) scipy, deliberately:
//!
//! * **Empty input** gives **0 frames**, like scipy (which returns empty
//!   arrays for an empty signal). The pipeline rejects audio with no samples
//!   before it gets here anyway.
//! * **Input shorter than `win_length`** (but not empty): scipy shrinks
//!   `nperseg` to the input length, with a warning, and then fails with
//!   "noverlap must be less than nperseg" when the input is shorter than
//!   `win_length - hop`. This module never changes the window: it applies the
//!   same definition as above (the short signal is zero-padded), which is the
//!   continuous extension of the long-signal case.
//!
//! # Normalization
//!
//! The complex spectrum of each frame is multiplied by `1 / Σ w[n]` (scipy's
//! `scaling='spectrum'`; `Σ w = win_length / 2` for the periodic Hann window),
//! so a full-scale sinusoid of amplitude `A` centred on a bin has a peak
//! magnitude of about `A / 2`. Only the magnitude `|X(f, t)|` is kept. All
//! arithmetic is in `f64` (the samples are `f32`, converted exactly).
//!
//! # Output order
//!
//! [`Spectrogram::data`] is **column-major** (frame by frame): the magnitude of
//! bin `f` in frame `t` is `data[t * n_bins + f]`, so that one frame is a
//! contiguous slice ([`Spectrogram::frame`]). This is the transpose of scipy's
//! `Zxx` layout, whose shape is `(n_bins, n_frames)`.
//!
//! # Parallelism and chunking
//!
//! Frames are computed in parallel with rayon; each frame is computed by the
//! same sequential code whatever thread runs it, so the result is
//! bit-identical for any number of threads. [`Stft::magnitude_frames`]
//! computes any range of frames of the full signal's STFT, so that a long
//! file's spectrogram can be produced in pieces.

use std::fmt;
use std::sync::Arc;

use rayon::prelude::*;
use realfft::num_complex::Complex;
use realfft::{RealFftPlanner, RealToComplex};

use crate::error::{Error, Result};

/// STFT parameters, with librosa's names. [`Default`] gives the paper's values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StftConfig {
    /// Sample rate of the input, in Hz (default 44100). Used only to convert
    /// frames and bins to seconds and hertz.
    pub sample_rate: u32,
    /// FFT size (default 8192); each windowed segment is zero-padded to this
    /// length. The spectrum has `n_fft / 2 + 1` bins. scipy's `nfft`.
    pub n_fft: usize,
    /// Window length in samples (default 4096). scipy's `nperseg`.
    pub win_length: usize,
    /// Hop between successive frames in samples (default 882, i.e. 20 ms at
    /// 44.1 kHz). scipy's `nperseg - noverlap`.
    pub hop_length: usize,
}

impl Default for StftConfig {
    /// The paper's parameters: 44.1 kHz, `n_fft` 8192, `win_length` 4096,
    /// `hop_length` 882.
    fn default() -> Self {
        StftConfig { sample_rate: 44100, n_fft: 8192, win_length: 4096, hop_length: 882 }
    }
}

impl StftConfig {
    /// Check the parameters: `sample_rate ≥ 1`, `win_length` even and ≥ 2,
    /// `n_fft` even and ≥ `win_length`, `1 ≤ hop_length ≤ win_length`.
    pub fn validate(&self) -> Result<()> {
        if self.sample_rate == 0 {
            return Err(Error::invalid_input("STFT sample rate must be at least 1 Hz"));
        }
        if self.win_length < 2 || self.win_length % 2 != 0 {
            return Err(Error::invalid_input(format!(
                "STFT window length must be even and at least 2 (got {})",
                self.win_length
            )));
        }
        if self.n_fft % 2 != 0 || self.n_fft < self.win_length {
            return Err(Error::invalid_input(format!(
                "STFT size n_fft must be even and at least the window length {} (got {})",
                self.win_length, self.n_fft
            )));
        }
        if self.hop_length == 0 || self.hop_length > self.win_length {
            return Err(Error::invalid_input(format!(
                "STFT hop length must be between 1 and the window length {} (got {})",
                self.win_length, self.hop_length
            )));
        }
        Ok(())
    }

    /// Number of frequency bins, `n_fft / 2 + 1`.
    pub fn n_bins(&self) -> usize {
        self.n_fft / 2 + 1
    }

    /// Time between two frames in seconds, `hop_length / sample_rate`.
    pub fn hop_seconds(&self) -> f64 {
        self.hop_length as f64 / self.sample_rate as f64
    }

    /// The Nyquist frequency in Hz, `sample_rate / 2` (the top bin's).
    pub fn nyquist(&self) -> f64 {
        self.sample_rate as f64 / 2.0
    }

    /// How many of the lowest bins lie below `max_frequency` Hz: the bins
    /// `f` with `f · sample_rate / n_fft < max_frequency`, i.e.
    /// `⌈max_frequency · n_fft / sample_rate⌉`, and all
    /// [`n_bins`](Self::n_bins) at the Nyquist frequency. At 44.1 kHz and
    /// `n_fft` 8192, 11025 Hz keeps 2048 of the 4097 bins, 5512.5 Hz 1024.
    /// An error unless `0 < max_frequency ≤` [`nyquist`](Self::nyquist).
    pub fn bins_below(&self, max_frequency: f64) -> Result<usize> {
        let nyquist = self.nyquist();
        if !(max_frequency > 0.0 && max_frequency <= nyquist) {
            return Err(Error::invalid_input(format!(
                "the highest frequency must be above 0 Hz and at most the Nyquist frequency {nyquist} Hz \
                 (got {max_frequency})"
            )));
        }
        if max_frequency == nyquist {
            return Ok(self.n_bins());
        }
        let bins = (max_frequency * self.n_fft as f64 / self.sample_rate as f64).ceil() as usize;
        Ok(bins.clamp(1, self.n_bins()))
    }
}

/// A magnitude spectrogram: `n_bins` frequency bins × `n_frames` frames.
#[derive(Debug, Clone, PartialEq)]
pub struct Spectrogram {
    /// Number of frequency bins per frame (`n_fft / 2 + 1`).
    pub n_bins: usize,
    /// Number of frames.
    pub n_frames: usize,
    /// Magnitudes, column-major: bin `f` of frame `t` is at
    /// `data[t * n_bins + f]`; `data.len() == n_bins * n_frames`.
    pub data: Vec<f64>,
    /// The parameters this spectrogram was computed with.
    pub config: StftConfig,
}

impl Spectrogram {
    /// Magnitude of bin `f` in frame `t`. Panics if either is out of range.
    #[inline]
    pub fn get(&self, f: usize, t: usize) -> f64 {
        assert!(f < self.n_bins && t < self.n_frames, "bin {f} / frame {t} out of range");
        self.data[t * self.n_bins + f]
    }

    /// The `n_bins` magnitudes of frame `t`. Panics if `t` is out of range.
    #[inline]
    pub fn frame(&self, t: usize) -> &[f64] {
        assert!(t < self.n_frames, "frame {t} out of range ({} frames)", self.n_frames);
        &self.data[t * self.n_bins..(t + 1) * self.n_bins]
    }

    /// Time in seconds at the centre of frame `t`: `t · hop_length / sample_rate`.
    ///
    /// For a spectrogram made by [`Stft::magnitude_frames`] starting at
    /// `first_frame`, this is relative to that frame: add
    /// `first_frame as f64 * self.hop_seconds()` for the time in the signal.
    #[inline]
    pub fn frame_time(&self, t: usize) -> f64 {
        t as f64 * self.hop_seconds()
    }

    /// Centre frequency of bin `f` in Hz: `f · sample_rate / n_fft`.
    #[inline]
    pub fn bin_frequency(&self, f: usize) -> f64 {
        f as f64 * self.config.sample_rate as f64 / self.config.n_fft as f64
    }

    /// Time between two frames in seconds: `hop_length / sample_rate`.
    #[inline]
    pub fn hop_seconds(&self) -> f64 {
        self.config.hop_seconds()
    }
}

/// A reusable STFT plan: the window, its normalization and a real-FFT plan,
/// built once by [`Stft::new`] and shared by all threads.
#[derive(Clone)]
pub struct Stft {
    config: StftConfig,
    /// Periodic Hann window, `win_length` samples.
    window: Vec<f64>,
    /// `1 / Σ window` (scipy's `scaling='spectrum'`).
    scale: f64,
    fft: Arc<dyn RealToComplex<f64>>,
}

impl fmt::Debug for Stft {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stft").field("config", &self.config).finish_non_exhaustive()
    }
}

/// Per-task buffers for one FFT.
struct Buffers {
    input: Vec<f64>,
    spectrum: Vec<Complex<f64>>,
    scratch: Vec<Complex<f64>>,
}

impl Stft {
    /// Validate `config` and plan the FFT.
    pub fn new(config: StftConfig) -> Result<Stft> {
        config.validate()?;
        let n = config.win_length;
        let window: Vec<f64> =
            (0..n).map(|i| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / n as f64).cos()).collect();
        let scale = 1.0 / window.iter().sum::<f64>();
        let fft = RealFftPlanner::<f64>::new().plan_fft_forward(config.n_fft);
        Ok(Stft { config, window, scale, fft })
    }

    /// The parameters of this plan.
    pub fn config(&self) -> &StftConfig {
        &self.config
    }

    /// Number of frames of the STFT of a signal of `n_samples` samples:
    /// 0 for an empty signal, otherwise `ceil(n_samples / hop) + 1`
    /// (`(padded_len - win_length) / hop + 1`, see the module doc).
    pub fn n_frames(&self, n_samples: usize) -> usize {
        if n_samples == 0 {
            0
        } else {
            n_samples.div_ceil(self.config.hop_length) + 1
        }
    }

    /// Magnitude STFT of `samples`, all [`Stft::n_frames`] frames.
    pub fn magnitude(&self, samples: &[f32]) -> Spectrogram {
        self.magnitude_frames(samples, 0, self.n_frames(samples.len()))
    }

    /// Frames `first_frame .. first_frame + n_frames` of the magnitude STFT of
    /// the whole of `samples`, exactly as [`Stft::magnitude`] computes them.
    /// Frames at or past `self.n_frames(samples.len())` are all zeros.
    pub fn magnitude_frames(&self, samples: &[f32], first_frame: usize, n_frames: usize) -> Spectrogram {
        let n_bins = self.config.n_bins();
        let total = self.n_frames(samples.len());
        let mut data = vec![0.0f64; n_bins * n_frames];
        // Frames at or past the end stay zero.
        let n_computed = total.saturating_sub(first_frame).min(n_frames);
        if n_computed > 0 {
            data[..n_computed * n_bins].par_chunks_mut(n_bins).with_min_len(8).enumerate().for_each_init(
                || Buffers {
                    input: self.fft.make_input_vec(),
                    spectrum: self.fft.make_output_vec(),
                    scratch: self.fft.make_scratch_vec(),
                },
                |buffers, (i, out)| self.frame_magnitude(samples, 0, first_frame + i, buffers, out),
            );
        }
        Spectrogram { n_bins, n_frames, data, config: self.config.clone() }
    }

    /// Frames `first_frame .. first_frame + n_frames` of the magnitude STFT of
    /// a signal of which `segment` holds the samples `segment_start ..
    /// segment_start + segment.len()`, the rest taken as zeros. Frame `t`
    /// reads the samples `t·hop − win/2 .. t·hop + win/2`, so it is exactly
    /// the frame of the whole signal when the segment covers that range (or
    /// the range's part inside the signal): this is how long recordings are
    /// processed piece by piece.
    pub fn magnitude_frames_of_segment(
        &self,
        segment: &[f32],
        segment_start: usize,
        first_frame: usize,
        n_frames: usize,
    ) -> Spectrogram {
        let n_bins = self.config.n_bins();
        let mut data = vec![0.0f64; n_bins * n_frames];
        data.par_chunks_mut(n_bins).with_min_len(8).enumerate().for_each_init(
            || Buffers {
                input: self.fft.make_input_vec(),
                spectrum: self.fft.make_output_vec(),
                scratch: self.fft.make_scratch_vec(),
            },
            |buffers, (i, out)| self.frame_magnitude(segment, segment_start, first_frame + i, buffers, out),
        );
        Spectrogram { n_bins, n_frames, data, config: self.config.clone() }
    }

    /// Compute frame `t` into `out` (`n_bins` values); `samples` are the
    /// signal's samples from index `offset` on (zeros elsewhere).
    fn frame_magnitude(&self, samples: &[f32], offset: usize, t: usize, buffers: &mut Buffers, out: &mut [f64]) {
        let win = self.config.win_length;
        let half = win / 2;
        let input = &mut buffers.input;
        input.fill(0.0);
        // Segment of the padded signal [t·hop, t·hop + win) is, in the
        // original signal, [t·hop - win/2, t·hop + win/2).
        let centre = t * self.config.hop_length;
        // Window index j ↔ sample index centre + j - half.
        let j_start = (offset + half).saturating_sub(centre);
        let j_end = win.min((offset + samples.len() + half).saturating_sub(centre));
        for j in j_start..j_end {
            input[j] = f64::from(samples[centre + j - half - offset]) * self.window[j];
        }
        // The buffers are made by this plan, so their lengths are right and
        // the transform cannot fail.
        self.fft
            .process_with_scratch(input, &mut buffers.spectrum, &mut buffers.scratch)
            .expect("FFT buffers made by the plan");
        // sqrt(re² + im²) rather than `hypot` (several times slower): the
        // magnitudes are far from overflow or underflow, and it is within an
        // ulp or two of scipy's `np.abs`.
        for (o, c) in out.iter_mut().zip(buffers.spectrum.iter()) {
            *o = (c.re * c.re + c.im * c.im).sqrt() * self.scale;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> StftConfig {
        StftConfig { sample_rate: 1000, n_fft: 64, win_length: 32, hop_length: 8 }
    }

    #[test]
    fn bins_below_a_frequency() {
        let paper = StftConfig::default();
        assert_eq!(paper.nyquist(), 22050.0);
        for (hz, bins) in [(11025.0, 2048), (8268.75, 1536), (5512.5, 1024), (5513.0, 1025), (22050.0, 4097)] {
            assert_eq!(paper.bins_below(hz).unwrap(), bins, "{hz} Hz");
        }
        // Just above bin 0's 0 Hz: bin 0 alone; just below Nyquist: all but the top bin.
        assert_eq!(paper.bins_below(1e-3).unwrap(), 1);
        assert_eq!(paper.bins_below(22049.0).unwrap(), 4096);
        for bad in [0.0, -1.0, f64::NAN, 22050.5, f64::INFINITY, f64::NEG_INFINITY] {
            let e = paper.bins_below(bad).unwrap_err();
            assert!(e.to_string().contains("Nyquist frequency 22050 Hz"), "{bad}: {e}");
        }
        assert_eq!(small().bins_below(250.0).unwrap(), 16);
        assert_eq!(small().bins_below(500.0).unwrap(), small().n_bins());
    }

    /// Deterministic pseudo-random samples in [-1, 1).
    fn noise(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f64 / (1u64 << 24) as f64 * 2.0 - 1.0) as f32
            })
            .collect()
    }

    /// The definition, literally: pad, frame, window, O(N²) DFT, scale.
    fn reference(x: &[f32], c: &StftConfig) -> (usize, Vec<f64>) {
        if x.is_empty() {
            return (0, Vec::new());
        }
        let (win, hop, nfft) = (c.win_length, c.hop_length, c.n_fft);
        let mut padded = vec![0.0f64; win / 2];
        padded.extend(x.iter().map(|&v| f64::from(v)));
        padded.resize(padded.len() + win / 2, 0.0);
        let len = padded.len() as i64;
        let (nperseg, nstep) = (win as i64, hop as i64);
        let nadd = (-(len - nperseg)).rem_euclid(nstep) % nperseg;
        padded.resize(padded.len() + nadd as usize, 0.0);
        let n_frames = (padded.len() - win) / hop + 1;
        let w: Vec<f64> =
            (0..win).map(|n| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * n as f64 / win as f64).cos()).collect();
        let sw: f64 = w.iter().sum();
        let n_bins = nfft / 2 + 1;
        let mut out = Vec::with_capacity(n_frames * n_bins);
        for t in 0..n_frames {
            let seg: Vec<f64> = (0..win).map(|n| padded[t * hop + n] * w[n]).collect();
            for f in 0..n_bins {
                let (mut re, mut im) = (0.0f64, 0.0f64);
                for (n, &v) in seg.iter().enumerate() {
                    let phase = -2.0 * std::f64::consts::PI * ((f * n) % nfft) as f64 / nfft as f64;
                    re += v * phase.cos();
                    im += v * phase.sin();
                }
                out.push((re * re + im * im).sqrt() / sw);
            }
        }
        (n_frames, out)
    }

    #[test]
    fn default_is_the_papers_and_valid() {
        let c = StftConfig::default();
        assert_eq!((c.sample_rate, c.n_fft, c.win_length, c.hop_length), (44100, 8192, 4096, 882));
        c.validate().unwrap();
        assert_eq!(c.n_bins(), 4097);
    }

    #[test]
    fn validate_rejects_bad_configs() {
        let base = StftConfig::default();
        for bad in [
            StftConfig { n_fft: 2048, ..base },
            StftConfig { n_fft: 8191, ..base },
            StftConfig { win_length: 4095, ..base },
            StftConfig { win_length: 0, ..base },
            StftConfig { hop_length: 0, ..base },
            StftConfig { hop_length: 4097, ..base },
            StftConfig { sample_rate: 0, ..base },
        ] {
            let e = bad.validate().unwrap_err();
            assert!(!e.to_string().contains('\n'));
            assert!(Stft::new(bad).is_err());
        }
        StftConfig { hop_length: 4096, n_fft: 4096, ..base }.validate().unwrap();
    }

    #[test]
    fn frame_count_matches_scipy_formula() {
        let stft = Stft::new(StftConfig::default()).unwrap();
        assert_eq!(stft.n_frames(30 * 44100), 1501);
        assert_eq!(stft.n_frames(0), 0);
        assert_eq!(stft.n_frames(1), 2);
        assert_eq!(stft.n_frames(882), 2);
        assert_eq!(stft.n_frames(883), 3);
        assert_eq!(stft.n_frames(52957), 62);
    }

    #[test]
    fn matches_direct_dft_for_all_small_lengths() {
        let c = small();
        let stft = Stft::new(c.clone()).unwrap();
        for len in 0..=200usize {
            let x = noise(len, len as u64);
            let (n_frames, expected) = reference(&x, &c);
            let s = stft.magnitude(&x);
            assert_eq!(s.n_frames, n_frames, "len {len}");
            assert_eq!(s.n_bins, 33);
            assert_eq!(s.data.len(), expected.len());
            let max = expected.iter().cloned().fold(0.0, f64::max);
            for (i, (&a, &b)) in s.data.iter().zip(&expected).enumerate() {
                // 1e-12 relative to the value, with a floor at 1e-12 of the
                // largest magnitude for bins that are round-off themselves.
                let tol = 1e-12 * b.abs().max(max * 1e-3);
                assert!((a - b).abs() <= tol, "len {len} index {i}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn other_shapes_match_direct_dft() {
        for c in [
            StftConfig { sample_rate: 8000, n_fft: 32, win_length: 32, hop_length: 32 },
            StftConfig { sample_rate: 8000, n_fft: 48, win_length: 16, hop_length: 3 },
            StftConfig { sample_rate: 8000, n_fft: 40, win_length: 30, hop_length: 7 },
        ] {
            let stft = Stft::new(c.clone()).unwrap();
            for len in [1usize, 5, 29, 30, 31, 96, 97, 150] {
                let x = noise(len, 7 + len as u64);
                let (n_frames, expected) = reference(&x, &c);
                let s = stft.magnitude(&x);
                assert_eq!(s.n_frames, n_frames, "{c:?} len {len}");
                let max = expected.iter().cloned().fold(0.0, f64::max);
                for (&a, &b) in s.data.iter().zip(&expected) {
                    assert!((a - b).abs() <= 1e-12 * b.abs().max(max * 1e-3), "{c:?} len {len}");
                }
            }
        }
    }

    #[test]
    fn frames_slice_equals_full() {
        let c = small();
        let stft = Stft::new(c).unwrap();
        let x = noise(173, 3);
        let full = stft.magnitude(&x);
        assert_eq!(full.n_frames, 23);
        for first in 0..full.n_frames + 3 {
            for n in 0..(full.n_frames + 5 - first) {
                let part = stft.magnitude_frames(&x, first, n);
                assert_eq!(part.n_frames, n);
                assert_eq!(part.n_bins, full.n_bins);
                for t in 0..n {
                    if first + t < full.n_frames {
                        assert_eq!(part.frame(t), full.frame(first + t), "first {first} t {t}");
                    } else {
                        assert!(part.frame(t).iter().all(|&v| v == 0.0));
                    }
                }
            }
        }
    }

    #[test]
    fn empty_input_gives_no_frames() {
        let stft = Stft::new(StftConfig::default()).unwrap();
        let s = stft.magnitude(&[]);
        assert_eq!((s.n_frames, s.n_bins, s.data.len()), (0, 4097, 0));
        let s = stft.magnitude_frames(&[], 0, 2);
        assert_eq!(s.n_frames, 2);
        assert!(s.data.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn thread_count_does_not_change_bits() {
        let stft = Stft::new(StftConfig::default()).unwrap();
        let x = noise(44100 * 2 + 123, 11);
        let run = |threads: usize| {
            rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(|| stft.magnitude(&x))
        };
        let one = run(1);
        for threads in [2, 3, 7] {
            let other = run(threads);
            assert!(one.data.iter().zip(&other.data).all(|(a, b)| a.to_bits() == b.to_bits()), "{threads} threads");
        }
    }

    #[test]
    fn sine_peaks_at_its_bin_with_half_amplitude() {
        let c = StftConfig::default();
        let stft = Stft::new(c).unwrap();
        // 441 Hz = exactly bin 81.92 → use a bin-centred frequency instead.
        let f0 = 100.0 * 44100.0 / 8192.0;
        let x: Vec<f32> =
            (0..44100).map(|n| (0.8 * (2.0 * std::f64::consts::PI * f0 * n as f64 / 44100.0).sin()) as f32).collect();
        let s = stft.magnitude(&x);
        let t = s.n_frames / 2;
        let frame = s.frame(t);
        let peak = (0..s.n_bins).max_by(|&a, &b| frame[a].total_cmp(&frame[b])).unwrap();
        assert_eq!(peak, 100);
        assert!((frame[100] - 0.4).abs() < 1e-6, "{}", frame[100]);
        assert!((s.bin_frequency(100) - f0).abs() < 1e-9);
        assert!((s.frame_time(50) - 1.0).abs() < 1e-12);
        assert!((s.hop_seconds() - 0.02).abs() < 1e-15);
        assert_eq!(s.get(100, t), frame[100]);
    }
}
