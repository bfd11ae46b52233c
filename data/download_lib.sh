# Shared by data/download_voc_mlt.sh and data/download_coco_mlt.sh (sourced,
# not run): messages, fetching with resume, checksum verification, and the
# split-file step. The caller sets SCRIPT_NAME, ROOT, SPLITS_BASE_URL and
# SPLITS (entries "name sha256").

die() { echo "$SCRIPT_NAME: $*" >&2; exit 1; }
say() { echo "$SCRIPT_NAME: $*"; }

# A failed run leaves nothing that looks like data: the folders this run
# created and left empty are removed (rmdir: never a file, never a folder
# that was there before). Verified split files and resumable *.part
# downloads stay.
_NEW_DIRS=()
for _dir in "$ROOT" "$DOWNLOAD_DIR" "$ROOT/longtail2012" "$ROOT/longtail2017"; do
  [ -e "$_dir" ] || _NEW_DIRS=("$_dir" "${_NEW_DIRS[@]}")
done
_remove_empty_new_dirs() {
  local rc=$? dir
  if [ "$rc" -ne 0 ]; then
    for dir in "${_NEW_DIRS[@]}"; do
      [ -d "$dir" ] && rmdir "$dir" 2>/dev/null || true
    done
  fi
  return "$rc"
}
trap _remove_empty_new_dirs EXIT

command -v python3 >/dev/null || die "python3 is needed"
if command -v curl >/dev/null; then
  fetch_to() { curl -fL --retry 3 -C - --progress-bar -o "$2" "$1"; }
  fetch_small() { curl -fsSL --retry 3 -o "$2" "$1"; }
elif command -v wget >/dev/null; then
  fetch_to() { wget -c -O "$2" "$1"; }
  fetch_small() { wget -q -O "$2" "$1"; }
else
  die "curl or wget is needed"
fi

# hash ALGO FILE -> hex digest (python3: same on Linux and macOS)
hash_of() {
  python3 - "$1" "$2" <<'EOF'
import hashlib, sys
h = hashlib.new(sys.argv[1])
with open(sys.argv[2], 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
        h.update(block)
print(h.hexdigest())
EOF
}

# download URL DEST ALGO DIGEST: fetch DEST unless it is there and verified
download() {
  local url=$1 dest=$2 algo=$3 want=$4 got
  if [ -f "$dest" ] && [ "$(hash_of "$algo" "$dest")" = "$want" ]; then
    say "have $(basename "$dest")"
    return 0
  fi
  mkdir -p "$(dirname "$dest")"
  if [ -f "$dest.part" ] && [ "$(hash_of "$algo" "$dest.part")" = "$want" ]; then
    mv "$dest.part" "$dest"
    return 0
  fi
  say "downloading $url"
  fetch_to "$url" "$dest.part" || die "download of $url failed (rerun to resume)"
  got=$(hash_of "$algo" "$dest.part")
  if [ "$got" != "$want" ]; then
    die "$dest.part: $algo is $got, expected $want (delete it and rerun; if a split file changed upstream, SKIP_SPLIT_CHECKSUMS=1 accepts it)"
  fi
  mv "$dest.part" "$dest"
}

# fetch_splits DIR: the split files of SPLITS into ROOT/DIR, verified
fetch_splits() {
  local dir=$1 entry name sha dest
  mkdir -p "$ROOT/$dir"
  for entry in "${SPLITS[@]}"; do
    read -r name sha <<<"$entry"
    dest="$ROOT/$dir/$name"
    if [ "${SKIP_SPLIT_CHECKSUMS:-0}" = 1 ]; then
      if [ ! -s "$dest" ]; then
        fetch_small "$SPLITS_BASE_URL/$name" "$dest.part" || die "download of $SPLITS_BASE_URL/$name failed"
        mv "$dest.part" "$dest"
      fi
    else
      download "$SPLITS_BASE_URL/$name" "$dest" sha256 "$sha"
    fi
  done
}
