#!/usr/bin/env bash
# Writes the text corpus for next-character language modelling (data/text.h) from Debian's
# `fortunes` package: every fortune file of /usr/share/games/fortunes as one UTF-8 text file.
#
# Layout (OUT defaults to ${MEL_DATA_HOME:-$HOME/.local/share/mel}/fortunes):
#   OUT/<name>.txt  one per fortune text file of the source folder, sorted by name (the strfile
#       indexes <name>.dat, the <name>.u8 symlinks and any subfolder are skipped). The content is
#       the source file's, byte for byte: documents (fortunes) separated by lines that are exactly
#       "%". A source file that is not valid UTF-8 is read as Latin-1 and converted to UTF-8 (with
#       a note; in fortunes 1:1.99.1-7.3 every file is already UTF-8, so nothing is converted).
#   OUT/meta.json   source, package, files, documents, bytes, converted (the names of converted
#       files). "documents" counts as read_text_corpus does: the pieces between "%" lines, less
#       those holding only whitespace (space, tab, CR, VT, FF, newline).
# The output is a pure function of the source files (no dates), so a rerun that would write the
# same folder is a no-op; a folder holding anything else is replaced only with --force. The folder
# is written into a temporary one beside it and renamed into place.
set -euo pipefail
export LC_ALL=C
die() { echo "make_text_corpus: error: $*" >&2; exit 1; }
usage() {
  cat <<'EOF'
Usage: scripts/make_text_corpus.sh [options]
  --out DIR      output folder (default: ${MEL_DATA_HOME:-$HOME/.local/share/mel}/fortunes)
  --source DIR   the fortune files (default: /usr/share/games/fortunes, from the Debian package
                 `fortunes`, installed with apt-get when missing)
  --force        replace OUT even if it holds something else (without it: exit 0 if OUT already
                 holds this corpus, refuse if it holds anything else)
  --help         this text
EOF
}

DEFAULT_SOURCE=/usr/share/games/fortunes
OUT="${MEL_DATA_HOME:-$HOME/.local/share/mel}/fortunes"
SOURCE="$DEFAULT_SOURCE" FORCE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --out|--source)
      [ $# -ge 2 ] || die "option $1 needs a value"
      case "$1" in --out) OUT="$2" ;; --source) SOURCE="$2" ;; esac
      shift 2 ;;
    --force) FORCE=1; shift ;;
    --help|-h) usage; exit 0 ;;
    *) usage >&2; die "unknown option '$1'" ;;
  esac
done
[ -n "$OUT" ] || die "--out must not be empty"
OUT="${OUT%/}"
SOURCE="${SOURCE%/}"

# --- The Debian package (idempotent, like scripts/setup.sh) -------------------------------------
# `fortunes` holds the full set; `fortunes-min` alone (a dependency) holds only the file "fortunes".
PACKAGE=""
if [ "$SOURCE" = "$DEFAULT_SOURCE" ]; then
  if ! dpkg-query -W -f='${Status}' fortunes 2>/dev/null | grep -q "install ok installed"; then
    echo "make_text_corpus: installing the missing Debian package: fortunes"
    [ "$(id -u)" -eq 0 ] || die "the corpus comes from the Debian package 'fortunes'; install it \
as root (apt-get install fortunes) or rerun this script as root (or with sudo)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends fortunes
  fi
  PACKAGE="fortunes $(dpkg-query -W -f='${Version}' fortunes)"
fi
[ -d "$SOURCE" ] || die "$SOURCE is not a folder (expected fortune files: documents separated \
by lines '%')"
for cmd in iconv cmp diff; do command -v "$cmd" >/dev/null || die "$cmd not found"; done

# --- The source files: regular files, not strfile indexes, not symlinks, sorted -----------------
files=()
while IFS= read -r f; do
  name=$(basename "$f")
  case "$name" in *.dat|*.u8|.*) continue ;; esac
  files+=("$name")
done < <(find "$SOURCE" -mindepth 1 -maxdepth 1 -type f ! -type l | sort)
[ ${#files[@]} -gt 0 ] || die "$SOURCE holds no fortune files (expected text files beside their \
.dat indexes)"

# --- Stage ----------------------------------------------------------------------------------------
mkdir -p "$(dirname "$OUT")"
STAGE="$(dirname "$OUT")/.$(basename "$OUT").tmp.$$"
trap 'rm -rf "$STAGE" "$STAGE.old"' EXIT
trap 'echo "make_text_corpus: interrupted" >&2; exit 130' INT TERM
rm -rf "$STAGE"
mkdir -p "$STAGE"
converted=()
for name in "${files[@]}"; do
  src="$SOURCE/$name" dst="$STAGE/$name.txt"
  [ "$(tr -d '\000' <"$src" | wc -c)" = "$(wc -c <"$src")" ] \
    || die "$src holds NUL bytes (expected text)"
  if iconv -f UTF-8 -t UTF-8 "$src" >/dev/null 2>&1; then
    cp "$src" "$dst"
  else
    # Not UTF-8: the older fortune files that are not are Latin-1 (ISO-8859-1), where every byte
    # is a character, so the conversion cannot fail.
    iconv -f ISO-8859-1 -t UTF-8 "$src" >"$dst" || die "iconv could not convert $src from Latin-1"
    converted+=("$name")
    echo "make_text_corpus: $src is not valid UTF-8; converted from Latin-1"
  fi
  chmod 644 "$dst"
done

# Documents as read_text_corpus counts them (see the header), and bytes.
DOCS=$(awk '
  FNR == 1 { if (NR > 1 && text) n++; text = 0 }
  $0 == "%" { if (text) n++; text = 0; next }
  /[^ \t\r\v\f]/ { text = 1 }
  END { if (NR > 0 && text) n++; print n + 0 }' "$STAGE"/*.txt)
BYTES=$(cat "$STAGE"/*.txt | wc -c)
jstr() { printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g')"; }
jlist() { local out="" s; for s in "$@"; do out="$out${out:+, }$(jstr "$s")"; done; echo "[$out]"; }
cat >"$STAGE/meta.json" <<EOF
{
  "source": $(jstr "$SOURCE"),
  "package": $([ -n "$PACKAGE" ] && jstr "$PACKAGE" || echo null),
  "files": ${#files[@]},
  "documents": $DOCS,
  "bytes": $BYTES,
  "converted": $(jlist "${converted[@]+"${converted[@]}"}")
}
EOF

# --- Into place -----------------------------------------------------------------------------------
if [ -e "$OUT" ]; then
  if diff -rq "$STAGE" "$OUT" >/dev/null 2>&1; then
    echo "make_text_corpus: $OUT already holds this corpus (${#files[@]} files," \
         "$DOCS documents, $BYTES bytes); nothing to do"
    exit 0
  fi
  if [ -d "$OUT" ] && [ -z "$(ls -A "$OUT")" ]; then
    rmdir "$OUT"
  elif [ "$FORCE" -ne 1 ]; then
    die "$OUT exists and does not hold this corpus; use --force to replace it"
  else
    mv "$OUT" "$STAGE.old"
  fi
fi
mv "$STAGE" "$OUT"
rm -rf "$STAGE.old"
trap - EXIT
echo "make_text_corpus: wrote $OUT: ${#files[@]} files, $DOCS documents, $BYTES bytes" \
     "(from $SOURCE${PACKAGE:+, $PACKAGE})"
