# Where TensorRT is: -DTENSORRT_ROOT=... wins; else the TENSORRT_ROOT environment variable; else the system paths
# (JetPack's and NVIDIA's Debian packages put NvInfer.h under include/<arch>-linux-gnu). Sets TENSORRT_INCLUDE_DIR
# and TENSORRT_LIBRARY (NOTFOUND when absent). Included by cpp/CMakeLists.txt; tests/tensorrt_root checks it.
set(TENSORRT_ROOT "$ENV{TENSORRT_ROOT}" CACHE PATH "TensorRT: include/ and lib/ (a tarball install)")
find_path(TENSORRT_INCLUDE_DIR NvInfer.h HINTS "${TENSORRT_ROOT}/include"
          PATH_SUFFIXES x86_64-linux-gnu aarch64-linux-gnu)
find_library(TENSORRT_LIBRARY nvinfer HINTS "${TENSORRT_ROOT}/lib" "${TENSORRT_ROOT}/lib64")
