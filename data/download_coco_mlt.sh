#!/usr/bin/env bash
# Download COCO-MLT (the long-tailed COCO split of Wu et al. 2020, in the
# LMPT / LM-CLIP file format) into the layout COCOMLT expects:
#
#   ROOT/longtail2017/{coco_labels.txt,coco_lt_train.txt,coco_lt_test.txt,
#                      coco_lt_captions.txt}
#   ROOT/train2017/*.jpg   (the 1,909 train images, from COCO 2017 train)
#   ROOT/val2017/*.jpg     (the 5,000 test images: COCO 2017 val)
#
# Usage: data/download_coco_mlt.sh [ROOT]    (default ROOT: data/coco_mlt)
#
# By default the official archives train2017.zip (18 GB) and val2017.zip
# (0.8 GB) are downloaded and checked against their md5, and only the listed
# images are extracted. With COCO_PER_IMAGE=1 only the 6,909 listed images
# are fetched one by one from images.cocodataset.org (about 1.1 GB, no
# checksum exists for single images).
#
# Idempotent: finished steps are skipped, interrupted downloads resume.
# Needs bash, curl or wget and python3.
#
# Environment:
#   DOWNLOAD_DIR           where the archives go (default ROOT/downloads)
#   REMOVE_ARCHIVES=1      delete each archive once extracted
#   COCO_PER_IMAGE=1       fetch the listed images one by one (see above)
#   COCO_URL               mirror of http://images.cocodataset.org
#   SPLITS_BASE_URL        where the split files are fetched from (default:
#                          the LMPT repository, which LM-CLIP also uses)
#   SKIP_SPLIT_CHECKSUMS=1 accept split files whose checksum differs from
#                          the ones this project was tested with
set -euo pipefail

ROOT=${1:-"$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/coco_mlt"}
DOWNLOAD_DIR=${DOWNLOAD_DIR:-"$ROOT/downloads"}
SPLITS_BASE_URL=${SPLITS_BASE_URL:-https://raw.githubusercontent.com/richard-peng-xia/LMPT/main/data/coco}
COCO_URL=${COCO_URL:-http://images.cocodataset.org}

# name md5 split-file (whose images the archive holds)
ARCHIVES=(
  "train2017.zip cced6f7f71b7629ddf16f17bbcfab6b2 longtail2017/coco_lt_train.txt"
  "val2017.zip 442b8da7639aecaf257c1dceb8ba8c80 longtail2017/coco_lt_test.txt"
)
# split file sha256 (of the copies this project was tested with)
SPLITS=(
  "coco_labels.txt a16d52dc65d8bc2b7abe5875199d802e951b7af142b327f8c85b496116a87f45"
  "coco_lt_train.txt 0fc4e30f2f722d96345a1ca712486437e7837aeb313946daf9a8833ee82f7124"
  "coco_lt_test.txt 5f5faf6b8b7940adf081ef125bd8506e397925b310da4eafc132cf7f375dcaf9"
  "coco_lt_captions.txt 4bcc3de5c20e3561f6bbe90188c00cea3adf1eab58245f761e4fd9b93319fecd"
)

SCRIPT_NAME=download_coco_mlt
# shellcheck source=download_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/download_lib.sh"

# listed_missing SPLIT_FILE: the image paths of SPLIT_FILE not yet in ROOT
listed_missing() {
  python3 - "$ROOT" "$1" <<'EOF'
import os, sys
root, split = sys.argv[1], sys.argv[2]
with open(os.path.join(root, split)) as f:
    for line in f:
        fields = line.split()
        if fields and not os.path.isfile(os.path.join(root, fields[0])):
            print(fields[0])
EOF
}

mkdir -p "$ROOT/longtail2017" "$DOWNLOAD_DIR"

# 1. split files
fetch_splits longtail2017

# 2. images
for entry in "${ARCHIVES[@]}"; do
  read -r name md5 split <<<"$entry"
  missing=$(listed_missing "$split")
  if [ -z "$missing" ]; then
    say "have every image of $split"
    continue
  fi
  if [ "${COCO_PER_IMAGE:-0}" = 1 ]; then
    say "fetching $(wc -l <<<"$missing") images of $split one by one"
    while read -r rel; do
      mkdir -p "$ROOT/$(dirname "$rel")"
      fetch_small "$COCO_URL/$rel" "$ROOT/$rel.part" || die "download of $COCO_URL/$rel failed (rerun to resume)"
      mv "$ROOT/$rel.part" "$ROOT/$rel"
    done <<<"$missing"
    continue
  fi
  download "$COCO_URL/zips/$name" "$DOWNLOAD_DIR/$name" md5 "$md5"
  say "extracting the images of $split from $name"
  list=$(mktemp)
  printf '%s\n' "$missing" >"$list"
  python3 - "$DOWNLOAD_DIR/$name" "$ROOT" "$list" <<'EOF'
import os, shutil, sys, zipfile
archive, root, listing = sys.argv[1:4]
with open(listing) as f:
    wanted = [line.strip() for line in f if line.strip()]
with zipfile.ZipFile(archive) as zf:
    names = set(zf.namelist())
    absent = [w for w in wanted if w not in names]
    if absent:
        sys.exit(f'{archive} lacks {len(absent)} listed images, e.g. '
                 f'{absent[:5]}')
    for member in wanted:
        dest = os.path.join(root, member)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        with zf.open(member) as src, open(dest + '.part', 'wb') as dst:
            shutil.copyfileobj(src, dst)
        os.replace(dest + '.part', dest)  # a listed image is whole or absent
EOF
  rm -f "$list"
  if [ "${REMOVE_ARCHIVES:-0}" = 1 ]; then
    rm -f "$DOWNLOAD_DIR/$name"
  fi
done

# 3. every listed image must be there
for split in longtail2017/coco_lt_train.txt longtail2017/coco_lt_test.txt; do
  missing=$(listed_missing "$split")
  [ -z "$missing" ] || die "$(wc -l <<<"$missing") images of $split are missing, e.g. $(head -3 <<<"$missing" | tr '\n' ' ')"
done
say "COCO-MLT ready in $ROOT"
