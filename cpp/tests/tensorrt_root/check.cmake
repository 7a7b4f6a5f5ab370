# cmake -DWORK=<dir> -P check.cmake: a fake TensorRT tree is found through -DTENSORRT_ROOT, through the environment
# variable, and -DTENSORRT_ROOT wins over the environment.
set(fake "${WORK}/fake-tensorrt")
file(REMOVE_RECURSE "${WORK}")
file(WRITE "${fake}/include/NvInfer.h" "// stand-in\n")
file(WRITE "${fake}/lib/libnvinfer.so" "")

# configure(<name> <environment setting> [-DTENSORRT_ROOT=...])
function(configure name environment)
  execute_process(COMMAND ${CMAKE_COMMAND} -E env ${environment} ${CMAKE_COMMAND} ${ARGN}
                          -S "${CMAKE_CURRENT_LIST_DIR}" -B "${WORK}/${name}"
                  OUTPUT_VARIABLE out ERROR_VARIABLE err RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${name}: configure failed: ${err}")
  endif()
  if(NOT out MATCHES "TENSORRT_INCLUDE_DIR=${fake}/include" OR NOT out MATCHES "TENSORRT_LIBRARY=${fake}/lib/")
    message(FATAL_ERROR "${name}: the fake TensorRT under ${fake} was not found:\n${out}")
  endif()
  message(STATUS "${name}: found ${fake}")
endfunction()

configure(option --unset=TENSORRT_ROOT -DTENSORRT_ROOT=${fake})
configure(environment TENSORRT_ROOT=${fake})
configure(option_over_environment TENSORRT_ROOT=${WORK}/nowhere -DTENSORRT_ROOT=${fake})
