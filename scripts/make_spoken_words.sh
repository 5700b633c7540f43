#!/usr/bin/env bash
# Synthesizes a keyword-spotting dataset in the style of Google Speech Commands with espeak-ng and
# sox, deterministically for a seed (byte-identical output for the same options, any --jobs).
#
# Layout (OUT defaults to ${MEL_DATA_HOME:-$HOME/.local/share/mel}/spoken-words):
#   OUT/<split>/<class>/<voice>_<accent>_<nnn>.wav
#       split in {train, validation, test}; class in {yes no up down left right on off stop go
#       _unknown_ _silence_}; for _silence_ the <accent> token is the noise kind (white pink brown
#       band). <voice> is the espeak-ng variant, lowercased, [a-z0-9-] only: the part of the name
#       before the first '_'. <nnn> counts the clips of that voice in that class from 000.
#       Every file: WAV, 16-bit signed PCM, mono, 16000 Hz, exactly 16000 samples (one second).
#   OUT/manifest.tsv  a header, then one line per clip:
#       split class word voice accent speed pitch noise snr_db path   ("-" where not applicable;
#       noise "none" for a clean clip; path relative to OUT)
#   OUT/meta.json     version, seed, per_word, options, sample_rate, clip_samples, classes, accents,
#       unknown_words, voices_per_split, clips_per_split, clips_per_class, voices (per split)
# Split rule: the 99 espeak-ng variants ("voices") are shuffled with the seed, the first K kept
#   (--voices), and the first 70% go to train, the next 15% to validation, the rest to test (at least
#   one each), so no voice is in two splits. Every split uses the same 8 English accents (the espeak
#   voice is accent+variant, e.g. en-us+f3; accent en-gb is spoken as en+variant, since espeak-ng
#   1.51 ignores the variant in en-gb+variant). Of the 101 variants of espeak-ng 1.51, caleb and
#   klatt6 are left out: they sound exactly like klatt, which would put one voice in two splits.
# Per voice: --per-word N clips of each command word, N of _unknown_ (a random other word) and N of
#   _silence_ (noise only, -60..-20 dBFS RMS). Each word clip draws an accent, speed (110..210 wpm),
#   pitch (20..80), amplitude (20..30: espeak clips some variants above ~35; the level is set later),
#   peak level (-12..-1 dBFS), position in the second, for 30% a sox speed change (0.92..1.08), and
#   for 80% a background noise (white/pink/brown/band, random offset) at 5..40 dB SNR. A word longer
#   than 0.95 s after trimming its silences is sped up (sox tempo) to fit. All draws come
#   sequentially from one seeded LCG while planning, so the plan is a pure function of the options;
#   the clips are then made from it in parallel. (MSW_TRACE=1 traces the clip workers.)
set -euo pipefail
export LC_ALL=C
VERSION=1
die() { echo "make_spoken_words: error: $*" >&2; exit 1; }
usage() {
  cat <<'EOF'
Usage: scripts/make_spoken_words.sh [options]
  --out DIR       output folder (default: ${MEL_DATA_HOME:-$HOME/.local/share/mel}/spoken-words)
  --seed N        seed of every random choice (default 0)
  --per-word N    clips per voice of each command word, of _unknown_ and of _silence_ (default 6)
  --voices K      use only the first K voices (espeak-ng variants) after the seeded shuffle (>= 3;
                  default: all 99)
  --jobs N        clips made in parallel (default: nproc); the output does not depend on it
  --force         replace OUT even if it exists (without it: exit 0 if OUT holds the dataset of
                  these options, refuse if it holds anything else)
  --help          this text
EOF
}

OUT="${MEL_DATA_HOME:-$HOME/.local/share/mel}/spoken-words"
SEED=0 PER_WORD=6 NVOICES="" JOBS="$(nproc)" FORCE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --out|--seed|--per-word|--voices|--jobs)
      [ $# -ge 2 ] || die "option $1 needs a value"
      case "$1" in
        --out) OUT="$2" ;; --seed) SEED="$2" ;; --per-word) PER_WORD="$2" ;;
        --voices) NVOICES="$2" ;; --jobs) JOBS="$2" ;;
      esac
      shift 2 ;;
    --force) FORCE=1; shift ;;
    --help|-h) usage; exit 0 ;;
    *) usage >&2; die "unknown option '$1'" ;;
  esac
done
isnum() { [[ "$1" =~ ^[0-9]+$ ]]; }
isnum "$SEED" && [ "${#SEED}" -le 15 ] || die "--seed must be a non-negative integer, got '$SEED'"
isnum "$PER_WORD" && [ "$PER_WORD" -ge 1 ] && [ "$PER_WORD" -le 999 ] || die "--per-word must be 1..999, got '$PER_WORD'"
isnum "$JOBS" && [ "$JOBS" -ge 1 ] || die "--jobs must be a positive integer, got '$JOBS'"
[ -n "$OUT" ] || die "--out must not be empty"
OUT="${OUT%/}"

# --- Debian packages (idempotent, like scripts/setup.sh) ---------------------------------------
missing=()
for p in espeak-ng sox libsox-fmt-base; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "make_spoken_words: installing missing Debian packages: ${missing[*]}"
  [ "$(id -u)" -eq 0 ] || die "installing ${missing[*]} needs root; rerun as root (or with sudo)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# --- Voices: the variants of espeak-ng 1.51 (file names under voices/!v; caleb and klatt6 left out,
# see the header), and the accents --------------------------------------------------------------
VARIANTS="Alex,Alicia,Andrea,Andy,Annie,AnxiousAndy,Demonic,Denis,Diogo,Gene,Gene2,Henrique,Hugo,\
Jacky,Lee,Marco,Mario,Michael,Mike,Mr serious,Nguyen,RicishayMax,RicishayMax2,RicishayMax3,Storm,\
Tweaky,UniRobot,adam,anika,anikaRobot,announcer,antonio,aunty,belinda,benjamin,boris,croak,\
david,ed,edward,edward2,f1,f2,f3,f4,f5,fast,grandma,grandpa,gustave,iven,iven2,iven3,iven4,john,\
kaukovalta,klatt,klatt2,klatt3,klatt4,klatt5,linda,m1,m2,m3,m4,m5,m6,m7,m8,marcelo,max,\
michel,miguel,norbert,pablo,paul,pedro,quincy,rob,robert,robosoft,robosoft2,robosoft3,robosoft4,\
robosoft5,robosoft6,robosoft7,robosoft8,sandro,shelby,steph,steph2,steph3,travis,victor,whisper,\
whisperf,zac"
ACCENTS="en-gb en-us en-gb-scotland en-gb-x-gbclan en-gb-x-rp en-gb-x-gbcwmd en-029 en-us-nyc"
CLASSES="yes no up down left right on off stop go _unknown_ _silence_"
UNKNOWN="zero one two three four five six seven eight nine bed bird cat dog happy house tree wow marvin sheila"
NOISES="white pink brown band"
espv() { if [ "$1" = en-gb ]; then echo en; else echo "$1"; fi; }  # the espeak-ng voice of an accent
NVAR_ALL=$(awk -F, '{print NF}' <<<"$VARIANTS")
[ -n "$NVOICES" ] || NVOICES=$NVAR_ALL
isnum "$NVOICES" && [ "$NVOICES" -ge 3 ] && [ "$NVOICES" -le "$NVAR_ALL" ] \
  || die "--voices must be 3..$NVAR_ALL (one voice at least per split), got '$NVOICES'"
# espeak-ng silently falls back to its default voice for an unknown accent or variant: check them.
have_variants=$(espeak-ng --voices=variant | sed -n 's/.* !v\/\(.*\)$/\1/p' | sed 's/ *([^)]*)//g; s/ *$//')
have_accents=$(espeak-ng --voices=en | awk 'NR > 1 {print $2}')
IFS=, read -r -a vlist <<<"$VARIANTS"
for v in "${vlist[@]}"; do
  grep -qxF "$v" <<<"$have_variants" || die "espeak-ng variant '$v' not found: expected the \
$NVAR_ALL variants of espeak-ng 1.51 named in this script (see: espeak-ng --voices=variant)"
done
for a in $ACCENTS; do
  grep -qxF "$a" <<<"$have_accents" || die "espeak-ng English accent '$a' not found: expected \
all of: $ACCENTS (see: espeak-ng --voices=en)"
  e=$(espv "$a")  # and the variant must change the sound (espeak-ng 1.51 ignores it in en-gb+m3)
  [ "$(espeak-ng -v "$e" --stdout yes | cksum)" != "$(espeak-ng -v "$e+m3" --stdout yes | cksum)" ] \
    || die "espeak-ng ignores the variant in '$e+m3' (accent $a): expected a different sound than '$e'"
done

# --- Idempotence, staging folder ----------------------------------------------------------------
OPTIONS="seed=$SEED per_word=$PER_WORD voices=$NVOICES version=$VERSION"
if [ -e "$OUT" ]; then
  if [ "$FORCE" -ne 1 ] && [ -f "$OUT/meta.json" ] && grep -qF "\"options\": \"$OPTIONS\"" "$OUT/meta.json"; then
    echo "make_spoken_words: $OUT already holds this dataset ($OPTIONS); nothing to do"; exit 0
  fi
  if [ -d "$OUT" ] && [ -z "$(ls -A "$OUT")" ]; then rmdir "$OUT"
  elif [ "$FORCE" -ne 1 ]; then
    die "$OUT exists and does not hold a dataset made with $OPTIONS; use --force to replace it"
  fi
fi
mkdir -p "$(dirname "$OUT")"
STAGE="$(dirname "$OUT")/.$(basename "$OUT").tmp.$$"
BUILD="$STAGE/.build"
XPID=""
trap 'rm -rf "$STAGE"' EXIT
trap '[ -z "$XPID" ] || kill "$XPID" 2>/dev/null; echo "make_spoken_words: interrupted" >&2; exit 130' INT TERM
mkdir -p "$BUILD/noise" "$BUILD/work"
export STAGE BUILD
START_TIME=$(date +%s)

# --- Noise: 60 s of each kind, once (sox -R makes the noise repeatable) -------------------------
NOISE_SAMPLES=$((60 * 16000))
for kind in $NOISES; do
  case "$kind" in
    white) gen=(whitenoise) ;; pink) gen=(pinknoise) ;; brown) gen=(brownnoise) ;;
    band) gen=(pinknoise sinc 300-3400) ;;
  esac
  f="$BUILD/noise/$kind.wav"
  sox -R -D -r 16000 -c 1 -n -e floating-point -b 32 "$f" synth "${NOISE_SAMPLES}s" "${gen[@]}" gain -n -3 \
    || die "sox could not make the $kind noise"
  sox "$f" -n stat 2>&1 | awk '/^RMS +amplitude/ {print $3}' >"$BUILD/noise/$kind.rms"
  [ -s "$BUILD/noise/$kind.rms" ] || die "sox stat gave no RMS for the $kind noise"
done

# --- Plan: every random draw, in a fixed order, from a MINSTD LCG (exact in awk's doubles) -------
# Fields: path split class word voice variant accent speed pitch amp peak_db pos warp noise
#         noise_offset snr_db silence_level_db
awk -v seed="$SEED" -v N="$PER_WORD" -v K="$NVOICES" -v variants="$VARIANTS" -v accents="$ACCENTS" \
    -v classes="$CLASSES" -v unknown="$UNKNOWN" -v noises="$NOISES" -v nsamp="$NOISE_SAMPLES" \
    -v vfile="$BUILD/voices.tsv" '
function rnd() { x = (x * 48271) % 2147483647; return x / 2147483647 }
function ri(lo, hi) { return lo + int(rnd() * (hi - lo + 1)) }
function rf(lo, hi) { return lo + rnd() * (hi - lo) }
BEGIN {
  x = seed % 2147483646 + 1; for (i = 0; i < 10; i++) rnd()
  nv = split(variants, V, ","); na = split(accents, A, " "); nc = split(classes, C, " ")
  nu = split(unknown, U, " "); nn = split(noises, NK, " ")
  for (i = nv; i > 1; i--) { j = ri(1, i); t = V[i]; V[i] = V[j]; V[j] = t }
  ntr = int(K * 0.70 + 0.5); nva = int(K * 0.15 + 0.5); if (nva < 1) nva = 1
  if (K - ntr - nva < 1) ntr = K - nva - 1
  for (v = 1; v <= K; v++) {
    split_ = v <= ntr ? "train" : (v <= ntr + nva ? "validation" : "test")
    tok = tolower(V[v]); gsub(/ /, "-", tok)
    print split_ "\t" tok "\t" V[v] > vfile
    for (c = 1; c <= nc; c++) for (n = 0; n < N; n++) {
      acc = A[ri(1, na)]; speed = ri(110, 210); pitch = ri(20, 80); amp = ri(20, 30)
      peak = rf(-12, -1); pos = rnd(); w1 = rnd(); w2 = rf(0.92, 1.08); uw = U[ri(1, nu)]
      noisy = rnd() < 0.8; kd = NK[ri(1, nn)]; noff = ri(0, nsamp - 16000)
      snr = rf(5, 40); level = rf(-60, -20)
      word = C[c] == "_unknown_" ? uw : C[c]
      warp = w1 < 0.3 ? sprintf("%.3f", w2) : "1"
      kind = noisy ? kd : "none"; snr = noisy ? sprintf("%.1f", snr) : "-"
      if (C[c] == "_silence_") { word = "-"; acc = "-"; speed = "-"; pitch = "-"; kind = kd; snr = "-" }
      path = sprintf("%s/%s/%s_%s_%03d.wav", split_, C[c], tok, C[c] == "_silence_" ? kind : acc, n)
      printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%.1f\t%.4f\t%s\t%s\t%d\t%s\t%.1f\n", path, split_, \
        C[c], word, tok, V[v], acc, speed, pitch, amp, peak, pos, warp, kind, noff, snr, level
    }
  }
}' >"$BUILD/plan.tsv"
NCLIPS=$(wc -l <"$BUILD/plan.tsv")
cut -f2 "$BUILD/voices.tsv" | grep -qvE '^[a-z0-9-]+$' && die "a voice name is not [a-z0-9-]"
[ -z "$(cut -f2 "$BUILD/voices.tsv" | sort | uniq -d)" ] || die "two variants give the same voice name"

# --- Clips, in parallel from the plan -----------------------------------------------------------
clip_fail() {  # clip_fail <clip> <step> <log>
  echo "make_spoken_words: error: clip $1: $2 failed:" >&2; sed 's/^/  /' "$3" >&2; exit 255
}
gen_clip() {
  local rel class word variant acc speed pitch amp peak pos warp kind noff snr level
  IFS=$'\t' read -r rel _ class word _ variant acc speed pitch amp peak pos warp kind noff snr level <<<"$1"
  local w="$BUILD/work/${rel//\//+}" out="$STAGE/$rel" nrms len rms start g fx=() place=()
  local log="$w.log"; : >"$log"
  [ "$kind" = none ] || read -r nrms <"$BUILD/noise/$kind.rms"
  if [ "$class" = _silence_ ]; then
    g=$(awk -v l="$level" -v r="$nrms" 'BEGIN { printf "%.4f", l - 20 * log(r) / log(10) }')
    sox -D "$BUILD/noise/$kind.wav" -b 16 -e signed-integer "$out" trim "${noff}s" 16000s gain "$g" \
      2>>"$log" || clip_fail "$rel" "sox (silence)" "$log"
  else
    espeak-ng -v "$(espv "$acc")+$variant" -s "$speed" -p "$pitch" -a "$amp" -w "$w.raw.wav" "$word" 2>>"$log" \
      || clip_fail "$rel" "espeak-ng -v '$(espv "$acc")+$variant' '$word'" "$log"
    [ "$warp" = 1 ] || fx=(speed "$warp")
    # 22050 -> 16000 Hz float (6 dB headroom against overshoot), peak at -1 dBFS, then trim the
    # leading/trailing silence (below -55 dBFS: keeps quiet fricatives such as the f of "off").
    sox -D "$w.raw.wav" -e floating-point -b 32 "$w.f.wav" gain -6 "${fx[@]}" rate -v 16000 \
      gain -n -1 silence 1 0.005 -55d reverse silence 1 0.005 -55d reverse 2>>"$log" \
      || clip_fail "$rel" "sox (resample, trim)" "$log"
    len=$(soxi -s "$w.f.wav" 2>>"$log") || clip_fail "$rel" soxi "$log"
    [ "$len" -gt 0 ] || { echo "only silence" >"$log"; clip_fail "$rel" "espeak-ng/trim" "$log"; }
    if [ "$len" -gt 15200 ]; then  # longer than 0.95 s: speed it up (pitch kept) to fit
      echo "$rel $len" >>"$BUILD/tempo.list"  # (only counted for the summary)
      sox -D "$w.f.wav" "$w.t.wav" tempo -s "$(awk -v l="$len" 'BEGIN { printf "%.4f", l / 15000 }')" \
        2>>"$log" && mv "$w.t.wav" "$w.f.wav" || clip_fail "$rel" "sox tempo" "$log"
      len=$(soxi -s "$w.f.wav")
    fi
    start=$(awk -v p="$pos" -v l="$len" 'BEGIN { s = int(p * (16000 - l)); print s < 0 ? 0 : s }')
    if [ "$len" -ge 16000 ]; then place=(trim 0 16000s); else place=(pad "${start}s" "$((16000 - start - len))s"); fi
    if [ "$kind" = none ]; then
      sox -D "$w.f.wav" -b 16 -e signed-integer "$out" "${place[@]}" gain -n "$peak" \
        2>>"$log" || clip_fail "$rel" "sox (place)" "$log"
    else
      rms=$(sox "$w.f.wav" -n stat 2>&1 | awk '/^RMS +amplitude/ {print $3}') && [ -n "$rms" ] \
        || { echo "no RMS from sox stat" >"$log"; clip_fail "$rel" "sox stat" "$log"; }
      g=$(awk -v s="$rms" -v r="$nrms" -v snr="$snr" 'BEGIN { printf "%.4f", 20 * log(s / r) / log(10) - snr }')
      sox -D "$BUILD/noise/$kind.wav" -e floating-point -b 32 "$w.n.wav" trim "${noff}s" 16000s gain "$g" \
        2>>"$log" && sox -D "$w.f.wav" "$w.p.wav" "${place[@]}" 2>>"$log" \
        && sox -D -m -v 0.4 "$w.p.wav" -v 0.4 "$w.n.wav" -b 16 -e signed-integer "$out" \
           gain -n "$peak" 2>>"$log" || clip_fail "$rel" "sox (noise mix)" "$log"
    fi
  fi
  if grep -q WARN "$log"; then clip_fail "$rel" "sox (it warned, e.g. of clipping)" "$log"; fi
  [ "$(soxi -s "$out" 2>/dev/null)" = 16000 ] && [ "$(soxi -r "$out")" = 16000 ] \
    || { echo "not 16000 samples at 16 kHz" >"$log"; clip_fail "$rel" check "$log"; }
  rm -f "$w".*
}
export -f gen_clip clip_fail espv
for s in train validation test; do for c in $CLASSES; do mkdir -p "$STAGE/$s/$c"; done; done
echo "make_spoken_words: making $NCLIPS clips of $NVOICES voices with $JOBS jobs in $STAGE"
xargs -d '\n' -P "$JOBS" -n 1 bash ${MSW_TRACE:+-x} -c 'set -euo pipefail; gen_clip "$1"' _ \
  <"$BUILD/plan.tsv" &
XPID=$!
wait "$XPID" || die "making the clips failed (see above); nothing was written to $OUT"
XPID=""

# --- Manifest, meta.json, then move into place ---------------------------------------------------
{ printf 'split\tclass\tword\tvoice\taccent\tspeed\tpitch\tnoise\tsnr_db\tpath\n'
  awk -F'\t' -v OFS='\t' '{ print $2, $3, $4, $5, $7, $8, $9, $14, $16, $1 }' "$BUILD/plan.tsv"
} >"$STAGE/manifest.tsv"
awk -F'\t' -v seed="$SEED" -v N="$PER_WORD" -v opts="$OPTIONS" -v ver="$VERSION" -v classes="$CLASSES" \
    -v accents="$ACCENTS" -v unknown="$UNKNOWN" '
function jlist(s,   a, n, i, r) { n = split(s, a, " "); r = ""
  for (i = 1; i <= n; i++) r = r (i > 1 ? ", " : "") "\"" a[i] "\""; return "[" r "]" }
FNR == NR { nv[$1]++; vl[$1] = vl[$1] (vl[$1] == "" ? "" : " ") $2; next }
{ cnt[$2, $3]++; tot[$2]++ }
END {
  ns = split("train validation test", S, " "); nc = split(classes, C, " ")
  printf "{\n  \"version\": \"%s\",\n  \"seed\": %s,\n  \"per_word\": %s,\n  \"options\": \"%s\",\n", ver, seed, N, opts
  printf "  \"sample_rate\": 16000,\n  \"clip_samples\": 16000,\n  \"classes\": %s,\n", jlist(classes)
  printf "  \"accents\": %s,\n  \"unknown_words\": %s,\n", jlist(accents), jlist(unknown)
  printf "  \"voices_per_split\": {"; for (s = 1; s <= ns; s++) printf "%s\"%s\": %d", (s > 1 ? ", " : ""), S[s], nv[S[s]]
  printf "},\n  \"clips_per_split\": {"; for (s = 1; s <= ns; s++) printf "%s\"%s\": %d", (s > 1 ? ", " : ""), S[s], tot[S[s]]
  printf "},\n  \"clips_per_class\": {\n"
  for (s = 1; s <= ns; s++) { printf "    \"%s\": {", S[s]
    for (c = 1; c <= nc; c++) printf "%s\"%s\": %d", (c > 1 ? ", " : ""), C[c], cnt[S[s], C[c]]
    printf "}%s\n", (s < ns ? "," : "") }
  printf "  },\n  \"voices\": {\n"
  for (s = 1; s <= ns; s++) printf "    \"%s\": %s%s\n", S[s], jlist(vl[S[s]]), (s < ns ? "," : "")
  printf "  }\n}\n"
}' "$BUILD/voices.tsv" "$BUILD/plan.tsv" >"$STAGE/meta.json"
NTEMPO=0; if [ -f "$BUILD/tempo.list" ]; then NTEMPO=$(wc -l <"$BUILD/tempo.list"); fi
rm -rf "$BUILD"
if [ -e "$OUT" ]; then mv "$OUT" "$STAGE.old" && rm -rf "$STAGE.old"; fi
mv "$STAGE" "$OUT"
trap - EXIT

echo "make_spoken_words: wrote $OUT in $(( $(date +%s) - START_TIME )) s, $(du -sh "$OUT" | cut -f1)"
awk -F'\t' 'NR > 1 { n[$1]++; if (!(($1, $4) in v)) { v[$1, $4] = 1; nv[$1]++ } }
  END { split("train validation test", S, " "); for (i = 1; i <= 3; i++) printf "  %-10s %6d clips  %3d voices\n", S[i], n[S[i]], nv[S[i]] }' "$OUT/manifest.tsv"
echo "  $NTEMPO word clips were longer than 0.95 s after trimming and were sped up (sox tempo) to fit"
