#!/usr/bin/env bash
# Everything a session with a lent GPU should check, in one device call: the lent machine is
# given back about 30 s after each call and a fresh one starts bare, so build, tests and
# benchmarks go together. From the repository root, with the device tool:
#
#     run(command="bash benchmarks/gpu_session.sh", carry=[".whl"])
#
# .whl/ (git-ignored) holds the wheels the device image lacks (cmeel, cmeel-eigen for the build;
# zarr, numcodecs, donfig, crc32c for the basin tests); download them here with
#     pip download --no-deps --python-version 3.12 --only-binary=:all: -d .whl \
#         cmeel "cmeel-eigen>=3.4,<3.5" zarr numcodecs donfig crc32c
# Each step has its own time limit so the whole call stays under the device's 600 s; what it
# measures goes under $OUT (the device tool brings it back), or ./gpu-out when run by hand.
# GPU_SESSION_STEPS picks steps (default "build tests layers wide bench long basins"; also
# "variants", the build-time knobs of cuda/warp_mlp.cuh against the default, about 7 minutes
# after the build: GPU_SESSION_STEPS="build variants" in a call of its own). The step limits add up
# to more than one call's 600 s; when the first call runs out, run the rest on the still-warm
# machine (the install is kept there): GPU_SESSION_STEPS="bench long basins" bash benchmarks/gpu_session.sh
# Back here, `python benchmarks/gpu_sass.py --measured <the bench step's bench_gpu.json>` sets each
# measured rate beside its arithmetic ceiling (no GPU needed).
set -uo pipefail
out="${OUT:-gpu-out}"
mkdir -p "$out"
steps="${GPU_SESSION_STEPS:-build tests layers wide bench long basins}"
want() { [[ " $steps " == *" $1 "* ]]; }
t0=$SECONDS
stamp() { echo "[$((SECONDS - t0)) s] $*"; }

nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || { echo "no nvidia-smi: not a GPU machine"; exit 1; }
head -12 "$out/nvidia-smi.txt"

export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
if want build; then
  stamp "install build requirements and missing runtime wheels from .whl/"
  shopt -s nullglob
  wheels=(.whl/cmeel-*.whl .whl/cmeel_eigen-*.whl)
  python3 -c "import zarr" 2>/dev/null || wheels+=(.whl/zarr-*.whl .whl/numcodecs-*.whl .whl/donfig-*.whl .whl/crc32c-*.whl)
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "${wheels[@]}"
  stamp "build and install sadfast (CUDA on)"
  # sm_90 only (the H100 / H200): half the ptxas work of the default sm_80 + sm_90
  if ! CUDAARCHS=90-real CMAKE_BUILD_PARALLEL_LEVEL=16 timeout 360 python3 -m pip install --no-build-isolation --no-deps -q . \
    > "$out/build.log" 2>&1; then
    tail -40 "$out/build.log"
    exit 1
  fi
fi
python3 -c "import sadfast; print('sadfast', sadfast.__version__, 'cuda_available', sadfast.cuda_available())" \
  | tee "$out/import.txt"

if want tests; then
  stamp "GPU tests (tests/test_cuda.py, GPU and device=auto basin maps)"
  # -W: the image's packages raise DeprecationWarnings that the project's warnings-as-errors turns
  # into failures; -p no:cacheprovider: the checkout may be read-only.
  timeout 200 python3 -m pytest -q -p no:cacheprovider -W ignore::DeprecationWarning -rs \
    tests/test_cuda.py "tests/test_basins.py" -k "cuda or gpu or auto or train" \
    > "$out/pytest_gpu.log" 2>&1
  echo "pytest exit $?"
  tail -25 "$out/pytest_gpu.log"
fi

if want layers; then
  stamp "poly4d: the lanes against the register-tiled layer kernels (sadfast.cuda.set_layer_kernel)"
  timeout 120 python3 benchmarks/bench_gpu.py --problems poly4d --sizes 10000 100000 --flow-k 100000 \
    --sections layers --out "$out/bench_gpu_layers.json" > "$out/bench_gpu_layers.log" 2>&1
  echo "bench_gpu layers exit $?"
  grep -v "Warning\|warn" "$out/bench_gpu_layers.log" | tail -4
fi

if want wide; then
  stamp "wide networks [4, w, w, 1], w = 32 64 128: shared against global per-flow workspaces"
  timeout 150 python3 benchmarks/bench_gpu.py --sections wide --wide-widths 32 64 128 --wide-k 10000 \
    --out "$out/bench_gpu_wide.json" > "$out/bench_gpu_wide.log" 2>&1
  echo "bench_gpu wide exit $?"
  grep -v "Warning\|warn" "$out/bench_gpu_wide.log" | tail -7
fi

if want bench; then
  stamp "bench_gpu (kernels and flows, float64 and float32, against the CPU and diffrax)"
  timeout 260 python3 benchmarks/bench_gpu.py --sizes 10000 100000 --flow-k 100000 \
    --sections kernels flows diffrax --diffrax-methods dopri5 tsit5 --out "$out/bench_gpu.json" \
    > "$out/bench_gpu.log" 2>&1
  echo "bench_gpu exit $?"
  grep -v "Warning\|warn" "$out/bench_gpu.log" | tail -30
fi

if want long; then
  stamp "long horizons: RKC, ROSW and auto on the GPU against its Dormand-Prince and the CPU's auto (t_end 1000)"
  timeout 240 python3 benchmarks/bench_gpu.py --problems poly1d poly2d --sections long --long-k 10000 \
    --out "$out/bench_gpu_long.json" > "$out/bench_gpu_long.log" 2>&1
  echo "bench_gpu long exit $?"
  grep -v "Warning\|warn" "$out/bench_gpu_long.log" | tail -8
fi

if want variants; then
  # The lanes path's build-time knobs (cuda/warp_mlp.cuh: SADFAST_ROW_BLOCK, SADFAST_ACT_ILP; each
  # setting gives bitwise the same values) against the default build, on this machine in this
  # call: kernels and flows of the three problems, float64 and float32, and the values bitwise
  # against the default's (benchmarks/variant_values.py). Each variant builds in its own folder and
  # installs over the default, which is reinstalled (no rebuild) at the end. The float64 and
  # float32 kernels are separate instantiations, so each dtype's rows decide its own knob
  # (SADFAST_ROW_BLOCK_F64 / _F32, SADFAST_ACT_ILP_F64 / _F32 set one dtype's).
  variants="${GPU_SESSION_VARIANTS:-ROW_BLOCK=8 ACT_ILP=0}"
  vlogs=/tmp/gpu-variant-logs  # only the JSON goes to $out: the device returns at most 8 files
  mkdir -p "$vlogs"
  vbench() {  # $1: tag; also checks the variant's values against the default's, bitwise
    python3 benchmarks/variant_values.py save "$vlogs/values_$1.npz" > /dev/null 2>&1
    [[ $1 == default ]] || python3 benchmarks/variant_values.py compare "$vlogs/values_default.npz" "$vlogs/values_$1.npz"
    timeout 150 python3 benchmarks/bench_gpu.py --sizes 100000 --flow-k 100000 --cpu-k 128 \
      --sections kernels flows --out "$out/bench_gpu_variant_$1.json" > "$vlogs/bench_$1.log" 2>&1
    echo "bench_gpu ($1) exit $?"
    grep -v "Warning\|warn" "$vlogs/bench_$1.log" | tail -14
  }
  stamp "variants: the default build"
  vbench default
  for v in $variants; do
    tag="$(echo "$v" | tr 'A-Z=' 'a-z_')"
    stamp "variants: -DSADFAST_$v"
    if ! CUDAFLAGS="-DSADFAST_$v" CUDAARCHS=90-real CMAKE_BUILD_PARALLEL_LEVEL=16 timeout 200 \
      python3 -m pip install --no-build-isolation --no-deps -q --config-settings=build-dir="/tmp/build_$tag" . \
      > "$vlogs/build_$tag.log" 2>&1; then
      tail -20 "$vlogs/build_$tag.log"
      continue
    fi
    vbench "$tag"
  done
  stamp "variants: reinstall the default build"
  CUDAARCHS=90-real CMAKE_BUILD_PARALLEL_LEVEL=16 timeout 200 python3 -m pip install --no-build-isolation --no-deps -q . \
    > "$vlogs/build_default.log" 2>&1 || tail -20 "$vlogs/build_default.log"
fi

if want basins; then
  stamp "512x512 poly1d map on the GPU (t_end 100)"
  timeout 120 python3 benchmarks/bench_basins.py --sizes 512 --methods dopri5 --device cuda --cluster 0 \
    --out "$out/basins_512_cuda.json" > "$out/basins.log" 2>&1
  echo "bench_basins exit $?"
  tail -8 "$out/basins.log"
fi
stamp "done"
