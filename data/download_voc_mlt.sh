#!/usr/bin/env bash
# Download VOC-MLT (the long-tailed VOC split of Wu et al. 2020, in the
# LMPT / LM-CLIP file format) into the layout VOCMLT expects:
#
#   ROOT/longtail2012/{voc_labels.txt,voc_lt_train.txt,voc_lt_test.txt,
#                      voc_lt_captions.txt}
#   ROOT/VOCdevkit/VOC2012/JPEGImages/*.jpg   (train: VOC2012 trainval)
#   ROOT/VOCdevkit/VOC2007/JPEGImages/*.jpg   (test: VOC2007 test)
#
# Usage: data/download_voc_mlt.sh [ROOT]     (default ROOT: data/voc_mlt)
#
# Idempotent: finished steps are skipped, interrupted downloads resume, and
# every archive and split file is checked against its checksum. Needs bash,
# curl or wget, tar and python3. About 2.4 GB of downloads.
#
# Environment:
#   DOWNLOAD_DIR           where the archives go (default ROOT/downloads)
#   REMOVE_ARCHIVES=1      delete each archive once extracted
#   VOC_URL                mirror of http://host.robots.ox.ac.uk/pascal/VOC
#   SPLITS_BASE_URL        where the split files are fetched from (default:
#                          the LMPT repository, which LM-CLIP also uses)
#   SKIP_SPLIT_CHECKSUMS=1 accept split files whose checksum differs from
#                          the ones this project was tested with
set -euo pipefail

ROOT=${1:-"$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/voc_mlt"}
DOWNLOAD_DIR=${DOWNLOAD_DIR:-"$ROOT/downloads"}
SPLITS_BASE_URL=${SPLITS_BASE_URL:-https://raw.githubusercontent.com/richard-peng-xia/LMPT/main/data/voc}
VOC_URL=${VOC_URL:-http://host.robots.ox.ac.uk/pascal/VOC}

# name md5 url member-to-extract
ARCHIVES=(
  "VOCtrainval_11-May-2012.tar 6cd6e144f989b92b3379bac3b3de84fd $VOC_URL/voc2012/VOCtrainval_11-May-2012.tar VOCdevkit/VOC2012/JPEGImages"
  "VOCtest_06-Nov-2007.tar b6e924de25625d8de591ea690078ad9f $VOC_URL/voc2007/VOCtest_06-Nov-2007.tar VOCdevkit/VOC2007/JPEGImages"
)
# split file sha256 (of the copies this project was tested with)
SPLITS=(
  "voc_labels.txt 59e82ce7a1fa096b8a80c22cc72e6c86e54c598b2e1cfe08a211f1c82a0dcb2c"
  "voc_lt_train.txt 2111a5e58ae8b67a112a2b2c8aa98fe8fa926ac3e1d73e2e4e0e4844c90cc047"
  "voc_lt_test.txt 43b2929a86e9fe685cdf3b6b72fb90b6838ff9f9f427807e8b9502111e73750a"
  "voc_lt_captions.txt a986c2d493d4258aa470fe0b48b66b12c1ec338e4341dda3fb4c46ef9865f273"
)

SCRIPT_NAME=download_voc_mlt
# shellcheck source=download_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/download_lib.sh"
command -v tar >/dev/null || die "tar is needed"

mkdir -p "$ROOT/longtail2012" "$DOWNLOAD_DIR"

# 1. split files
fetch_splits longtail2012

# 2. images
for entry in "${ARCHIVES[@]}"; do
  read -r name md5 url member <<<"$entry"
  done_marker="$ROOT/$member/.extracted_from_$name"
  if [ -f "$done_marker" ]; then
    say "have $member"
    continue
  fi
  download "$url" "$DOWNLOAD_DIR/$name" md5 "$md5"
  say "extracting $member from $name"
  tar -xf "$DOWNLOAD_DIR/$name" -C "$ROOT" "$member"
  touch "$done_marker"
  if [ "${REMOVE_ARCHIVES:-0}" = 1 ]; then
    rm -f "$DOWNLOAD_DIR/$name"
  fi
done

# 3. every listed image must be there
python3 - "$ROOT" longtail2012/voc_lt_train.txt longtail2012/voc_lt_test.txt <<'EOF'
import os, sys
root, missing, total = sys.argv[1], [], 0
for split in sys.argv[2:]:
    with open(os.path.join(root, split)) as f:
        for line in f:
            if line.split():
                total += 1
                path = os.path.join(root, line.split()[0])
                if not os.path.isfile(path):
                    missing.append(path)
if missing:
    sys.exit(f'download_voc_mlt: {len(missing)} of {total} listed images are '
             f'missing, e.g. {missing[:5]}')
print(f'download_voc_mlt: VOC-MLT ready in {root} ({total} images)')
EOF
