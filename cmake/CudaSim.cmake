# MEL_CUDA=SIM: the hand-written kernels of kernels/cuda built as host C++ for the kernel simulator
# (tests/cudasim/, docs/ARCHITECTURE.md "Kernel simulator"). Each .cu/.cuh is rewritten by
# tests/cudasim/transform.cmake into the build folder (launches and __shared__ declarations only;
# #line keeps the original file and lines), compiled with g++ against the toolkit's headers and
# the simulator's device header, with UBSan's checks of alignment (float4 loads), array bounds
# and integer overflow. The CUDA runtime, cuBLASLt and cuDNN calls go to the simulator's runtime
# (tests/cudasim/runtime.cpp, vendor_stubs.cpp). The rest of mel is compiled as in a CUDA build
# (MEL_HAVE_CUDA) and runs on the simulated device cuda:0.
if(NOT CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64)$")
  message(FATAL_ERROR "mel: MEL_CUDA=SIM runs its fibers with an x86-64 context switch "
                      "(tests/cudasim/runtime.cpp); this is ${CMAKE_SYSTEM_PROCESSOR}")
endif()
find_package(CUDAToolkit REQUIRED)
find_path(MEL_CUDNN_INCLUDE_DIR cudnn.h HINTS ${CUDAToolkit_INCLUDE_DIRS} /usr/local/cuda/include)
if(NOT MEL_CUDNN_INCLUDE_DIR)
  message(FATAL_ERROR "mel: MEL_CUDA=SIM needs the cuDNN headers (cudnn.h)")
endif()

set(_sim_dir ${PROJECT_SOURCE_DIR}/tests/cudasim)
set(_sim_src ${PROJECT_BINARY_DIR}/cudasim_src)
set(_sim_ubsan -fsanitize=alignment,bounds,null,shift,integer-divide-by-zero,signed-integer-overflow,vla-bound,return,unreachable)

# The simulator's runtime: memory, fibers, checks, and the CUDA / cuBLASLt / cuDNN entry points.
add_library(mel_cudasim STATIC ${_sim_dir}/runtime.cpp ${_sim_dir}/vendor_stubs.cpp)
target_include_directories(mel_cudasim PUBLIC ${_sim_dir}/include ${CUDAToolkit_INCLUDE_DIRS}
                                              ${MEL_CUDNN_INCLUDE_DIR})
target_link_libraries(mel_cudasim PUBLIC mel_options)
target_link_options(mel_cudasim PUBLIC -fsanitize=undefined)

file(GLOB _sim_cu CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/kernels/cuda/*.cu)
file(GLOB _sim_cuh CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/kernels/cuda/*.cuh)
set(_sim_generated)
set(_sim_headers)
foreach(f ${_sim_cu} ${_sim_cuh})
  get_filename_component(n ${f} NAME)
  if(f MATCHES "\\.cu$")
    set(out ${_sim_src}/kernels/cuda/${n}.cpp)
    list(APPEND _sim_generated ${out})
  else()
    set(out ${_sim_src}/kernels/cuda/${n})
    list(APPEND _sim_headers ${out})
  endif()
  add_custom_command(OUTPUT ${out}
    COMMAND ${CMAKE_COMMAND} -DIN=${f} -DOUT=${out} -P ${_sim_dir}/transform.cmake
    DEPENDS ${f} ${_sim_dir}/transform.cmake
    COMMENT "cudasim: rewriting ${n} for the kernel simulator" VERBATIM)
endforeach()
add_custom_target(mel_cudasim_headers DEPENDS ${_sim_headers})

add_library(mel_cuda_sim_kernels OBJECT ${_sim_generated})
add_dependencies(mel_cuda_sim_kernels mel_cudasim_headers)
# The rewritten headers and the simulator's cuda_runtime.h come before the project root.
target_include_directories(mel_cuda_sim_kernels BEFORE PRIVATE ${_sim_src} ${_sim_dir}/include)
target_link_libraries(mel_cuda_sim_kernels PRIVATE mel_cudasim)
target_compile_definitions(mel_cuda_sim_kernels PRIVATE MEL_HAVE_CUDA=1 MEL_CUDA_SIM=1)
# (-Wno-subobject-linkage: #line makes g++ take each rewritten file for a header, and a lambda
# capturing a type of the file's anonymous namespace would be reported.)
target_compile_options(mel_cuda_sim_kernels PRIVATE ${_sim_ubsan} -fno-sanitize-recover=all
                                                    -ffp-contract=off -Wno-subobject-linkage)

target_sources(mel_kernels PRIVATE $<TARGET_OBJECTS:mel_cuda_sim_kernels>)
target_compile_definitions(mel_kernels PUBLIC MEL_HAVE_CUDA=1 MEL_CUDA_SIM=1)
target_link_libraries(mel_kernels PUBLIC mel_cudasim)
message(STATUS "mel: kernels/cuda built for the kernel simulator (MEL_CUDA=SIM)")
