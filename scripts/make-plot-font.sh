#!/bin/sh
# Regenerates assets/plot-font.ttf, the font `sscnmf plot` draws its text
# with: DejaVu Sans (Bitstream Vera licence, DejaVu changes public domain;
# see assets/README.md) cut to the characters the plots use, so that the
# binary needs no system fonts (plotters' `ab_glyph` feature) and carries
# ~25 KB instead of 760 KB.
#
# Needs DejaVuSans.ttf (Debian: fonts-dejavu-core) and fonttools's
# pyftsubset (pip install fonttools).
set -eu
src=${1:-/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf}
here=$(cd "$(dirname "$0")/.." && pwd)
# Basic Latin, Latin-1 (× ± ° µ), Greek (δ τ λ), general punctuation
# (– — ’ …), ♯ ♭ (note names), − (minus), → ≈ ≤ ≥.
pyftsubset "$src" \
  --unicodes="U+0020-007E,U+00A0-00FF,U+0391-03C9,U+2010-2027,U+2032-2033,U+2212,U+2192,U+2248,U+2264-2265,U+266D-266F" \
  --layout-features='' --no-hinting --desubroutinize \
  --name-IDs='*' --name-legacy --name-languages='*' \
  --output-file="$here/assets/plot-font.ttf"
ls -l "$here/assets/plot-font.ttf"
