#!/usr/bin/env bash
# One prepared check of napari-unet on a CUDA GPU, for whoever is lent one: under 8 minutes
# (every part ends by GPU_CHECK_SECONDS, default 460 s) on one H100 or H200. Made for a device
# machine: Python 3.12, a CUDA build of torch, no napari, no Qt, no network; it runs from the
# checkout with PYTHONPATH=src, nothing installed.
#
#   bash benchmarks/gpu_check.sh [DATA]           the check (DATA: what --pack wrote; default
#                                                  .gpu_data if it is there)
#   bash benchmarks/gpu_check.sh --parts env,memory [DATA]   only these parts
#   bash benchmarks/gpu_check.sh --pack [DIR]     here: the DSB files it trains and scores on,
#                                                  into DIR (default .gpu_data, git-ignored)
#   bash benchmarks/gpu_check.sh --wheels         here: the wheels of the missing packages, into
#                                                  .whl/ (git-ignored)
#   bash benchmarks/gpu_check.sh --cpu-dry-run    every part, small, on the CPU (its own test)
#
# Without a CUDA device (and without --cpu-dry-run) it prints "no CUDA device: skipped" and
# exits 0, having run nothing else. PYTHON names the interpreter (default .venv/bin/python if
# there, else python3). Exit status: 0 when every part that ran succeeded.
#
# Parts, in this order (benchmarks/gpu_check.py computes each one's figures; each runs under
# its own time limit, shortened when the deadline is nearer):
#   env         GPU, driver, torch, CUDA, cuDNN and package versions
#   cuda_tests  the tests marked cuda (pytest -m cuda: training with float16 autocast, the
#               gradient scaler, channels-last; validation, prediction and augmentation on
#               the device against the CPU; the model file read back on the CPU)
#   memory      a training as the Train widget runs it, without Qt (the form's plan, a run
#               folder, the child process, the model loaded in a thread), then
#               torch.cuda.memory_allocated() of the parent process: must be 0
#   speed       training steps/s: the paper's network (depth 4, base 64, tile 572, batch 1,
#               paper preset) and the CPU recipe (depth 3, base 16, tile 156, batch 2,
#               adamw), each with and without mixed precision, alternating; medians
#   predict     prediction Mpixel/s on a 2048 x 2048 image, one pass and with the default
#               test-time augmentation (the image and its half-turn)
#   dsb         napari-unet train --gray --time-limit 180 with the GPU defaults on the packed
#               DSB training images, then napari-unet evaluate on the validation images
#   core_tests  tests/core, tests/engine, tests/commands on this machine, in the time left;
#               not in a dry run
# Results, in $OUT (default benchmarks/out/gpu_check): gpu_check.json (every figure),
# gpu_check.log, pytest_cuda.xml, pytest_core.xml, dsb_events.jsonl.
#
# The device call, from the root of the checkout the session sends, after once here:
#   bash benchmarks/gpu_check.sh --wheels && bash benchmarks/gpu_check.sh --pack
#   run(command="bash benchmarks/gpu_check.sh", carry=[".whl", ".gpu_data"], timeout_s=540)
# --pack prints what the call would send (the working tree, .whl and .gpu_data), against the
# 64 MiB a call may carry.
#
# The wheels: what a device machine lacks of the project's dependencies for the core, engine
# and command-line code (its image has numpy, torch, scipy, scikit-image, pandas, tifffile,
# imageio, safetensors, tqdm, numba, pytest, hypothesis and what dask needs besides partd and
# locket: click, cloudpickle, fsspec, toolz, pyyaml, packaging). 10.6 MiB (numcodecs 8.9 MiB,
# dask 1.4 MiB). --wheels runs:
#   python -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
#     --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     --platform manylinux1_x86_64 -d .whl dask==2026.8.0 partd==1.4.2 locket==1.0.0 \
#     zarr==3.1.6 numcodecs==0.16.6 donfig==0.8.1.post1 google-crc32c==1.9.0
set -u -o pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
WHEELS=(dask==2026.8.0 partd==1.4.2 locket==1.0.0 zarr==3.1.6 numcodecs==0.16.6
        donfig==0.8.1.post1 google-crc32c==1.9.0)
ALL=env,cuda_tests,memory,speed,predict,dsb,core_tests
DRY=0 DATA= PARTS=$ALL
while [ $# -gt 0 ]; do
    case $1 in
        --cpu-dry-run) DRY=1 ;;
        --parts) PARTS=${2:?--parts: expected a list such as env,memory}; shift ;;
        --pack)
            DEST=.gpu_data
            if [ $# -gt 1 ] && [ "${2#-}" = "$2" ]; then DEST=$2; fi
            PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}" exec "$PYTHON" benchmarks/gpu_pack.py "$DEST" ;;
        --wheels)
            "$PYTHON" -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
                --implementation cp --platform manylinux_2_28_x86_64 \
                --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
                --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
                "${WHEELS[@]}" || exit 1
            du -ch .whl/*.whl
            exit 0 ;;
        -h|--help) sed -n '2,/^set -u/p' "$0" | sed '$d'; exit 0 ;;
        -*) echo "gpu_check.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) DATA=$1 ;;
    esac
    shift
done
if [ $DRY = 0 ] && ! "$PYTHON" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' \
        >/dev/null 2>&1; then
    echo "no CUDA device: skipped"
    exit 0
fi
if [ -z "$DATA" ] && [ $DRY = 0 ] && [ -f .gpu_data/manifest.json ]; then DATA=.gpu_data; fi
OUT=${OUT:-$ROOT/benchmarks/out/gpu_check}
mkdir -p "$OUT"
JSON=$OUT/gpu_check.json
if [ "$PARTS" = "$ALL" ]; then rm -f "$JSON" "$OUT/gpu_check.log"; fi
WORK=$(mktemp -d "${TMPDIR:-/tmp}/napari_unet_gpu_check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
if [ $DRY = 1 ]; then DEVICE=cpu DRYFLAG=--dry-run; else DEVICE=cuda DRYFLAG=; fi
DEADLINE=${GPU_CHECK_SECONDS:-460}  # every part ends by then: the check stays under 8 minutes

main() {
    local START=$SECONDS FAILED=0 LAST_RC=0 LAST_S=0
    echo "napari-unet GPU check: parts $PARTS; python $PYTHON; out $OUT; at most $DEADLINE s"
    if [ $DRY = 0 ] && compgen -G ".whl/*.whl" >/dev/null; then  # carried wheels, as the device README says
        if "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
                --upgrade --target "$WORK/site" .whl/*.whl; then
            export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
        else
            echo "installing .whl/*.whl failed: what needs dask or zarr will fail"
        fi
    fi
    export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
    [ $DRY = 0 ] && nvidia-smi
    local COMMON=(--out "$JSON" --work "$WORK" --device "$DEVICE" $DRYFLAG)
    local PYTEST=("$PYTHON" -m pytest -p no:cacheprovider -q -rfEs
                  # the configuration's filters name pydantic, which a device machine lacks
                  # (an older pytest stops on it, a newer one warns at every test)
                  -o "filterwarnings=ignore::DeprecationWarning")

    mark() {  # mark NAME RC SECONDS [NOTE]: a part's exit status and time go to the JSON
        "$PYTHON" benchmarks/gpu_check.py mark --out "$JSON" --section "$1" --rc "$2" \
            --seconds "$3" ${4:+--note "$4"} >/dev/null
    }
    # part NAME CAP MIN CMD...: CMD under a limit of CAP s, less if the deadline is nearer;
    # not run when fewer than MIN s are left
    part() {
        local name=$1 cap=$2 min=$3 t0=$SECONDS left
        shift 3
        left=$((DEADLINE - (SECONDS - START)))
        LAST_RC=0
        if [ $left -lt "$min" ]; then
            echo "== $name: not run ($left s left of $DEADLINE s)"
            LAST_RC=-1 LAST_S=0
            mark "$name" -1 0 "not run: $left s left of $DEADLINE s"
            return
        fi
        [ $left -lt "$cap" ] && cap=$left
        echo "== $name (at most $cap s; $((SECONDS - START)) s into the check)"
        timeout -s INT -k 10 "$cap" "$@" || LAST_RC=$?
        LAST_S=$((SECONDS - t0))
        [ $LAST_RC = 124 ] && echo "$name: stopped at its time limit ($cap s)"
        [ $LAST_RC = 0 ] || FAILED=1
        mark "$name" "$LAST_RC" "$LAST_S"
    }
    tests() {  # tests NAME REPORT: the counts of a pytest report go to the JSON
        [ $LAST_RC = -1 ] && return
        "$PYTHON" benchmarks/gpu_check.py tests --out "$JSON" --section "$1" --junit "$2" \
            --rc "$LAST_RC" --seconds "$LAST_S" >/dev/null
    }
    wanted() { case ",$PARTS," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

    wanted env && part env 60 10 "$PYTHON" benchmarks/gpu_check.py env "${COMMON[@]}"
    if wanted cuda_tests; then
        # a dry run runs their code on the CPU (tests/core/test_cuda.py reads the variable)
        [ $DRY = 1 ] && export NAPARI_UNET_TEST_DEVICE=cpu
        # the test files that mark tests cuda (collecting them all would take longer)
        mapfile -t files < <(grep -rlE 'mark\.cuda' tests/core tests/engine tests/commands \
                             --include='test_*.py' | sort)
        if [ ${#files[@]} = 0 ]; then
            echo "== cuda_tests: no test file marks a test cuda"
            mark cuda_tests 1 0 "no test file marks a test cuda"
            FAILED=1
        else
            part cuda_tests 120 30 "${PYTEST[@]}" -m cuda --junitxml="$OUT/pytest_cuda.xml" \
                "${files[@]}"
            tests cuda_tests "$OUT/pytest_cuda.xml"
        fi
        unset NAPARI_UNET_TEST_DEVICE
    fi
    wanted memory && part memory 150 40 "$PYTHON" benchmarks/gpu_check.py memory "${COMMON[@]}"
    wanted speed && part speed 150 40 "$PYTHON" benchmarks/gpu_check.py speed "${COMMON[@]}"
    wanted predict && part predict 120 30 "$PYTHON" benchmarks/gpu_check.py predict "${COMMON[@]}"
    if wanted dsb; then
        # 180 s of training, less (at least 60) if the deadline is nearer; 90 s for the start,
        # the evaluation and the end
        local train=180 left=$((DEADLINE - (SECONDS - START) - 90))
        [ $left -lt $train ] && train=$left
        if [ $DRY = 1 ]; then  # three steps, on a tiny synthetic pack unless DATA is given
            train=30
            if [ -z "$DATA" ]; then
                "$PYTHON" benchmarks/gpu_pack.py --synthetic "$WORK/data" >/dev/null
                DATA=$WORK/data/pack
            fi
        fi
        if [ -z "$DATA" ] || [ ! -f "$DATA/manifest.json" ]; then
            echo "== dsb: no data folder (here: bash benchmarks/gpu_check.sh --pack; carry .gpu_data)"
            mark dsb -1 0 "no data folder: make one with --pack and carry it"
        elif [ $train -lt 60 ] && [ $DRY = 0 ]; then
            echo "== dsb: not run ($((train + 90)) s left of $DEADLINE s)"
            mark dsb -1 0 "not run: $((train + 90)) s left of $DEADLINE s"
        else
            part dsb $((train + 90)) 0 "$PYTHON" benchmarks/gpu_check.py dsb "${COMMON[@]}" \
                --data "$DATA" --time-limit $train --events "$OUT/dsb_events.jsonl"
        fi
    fi
    if wanted core_tests; then
        if [ $DRY = 1 ]; then
            echo "== core_tests: not run (a dry run)"
            mark core_tests -1 0 "not run: a dry run"
        else
            local extra=()
            "$PYTHON" -c "import xdist" 2>/dev/null && extra+=(-n 8)
            "$PYTHON" -c "import pytest_timeout" 2>/dev/null && extra+=(--timeout 120)
            part core_tests $DEADLINE 30 "${PYTEST[@]}" "${extra[@]}" \
                --junitxml="$OUT/pytest_core.xml" tests/core tests/engine tests/commands
            tests core_tests "$OUT/pytest_core.xml"
        fi
    fi
    echo "== done in $((SECONDS - START)) s; figures in $JSON"
    return $FAILED
}

main 2>&1 | tee -a "$OUT/gpu_check.log"
exit "${PIPESTATUS[0]}"
