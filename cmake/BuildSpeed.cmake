# Build speed (included at the end of the root CMakeLists.txt, once every target exists).
#
# MEL_UNITY_BUILD: each library, test program and fuzz program is compiled as a few unity
# translation units (CMake's UNITY_BUILD: one .cxx file that #includes several .cpp files) instead
# of one per .cpp. Most of a mel translation unit's compile time goes to the same headers and the same
# template instantiations (fmt, nlohmann/json, CLI11, GoogleTest, the standard library), which a
# unity file parses and optimises once for all its sources: a whole build takes about half the time.
# scripts/test.sh and scripts/fuzz.sh turn it on; it is off by default so that an everyday build
# still compiles every .cpp on its own (a missing #include shows there).
#
# A target's sources are split into MEL_UNITY_BATCHES unity files of equal size (default 2: the
# libraries are built one after the other, each target's files in parallel, so two files keep two
# cores busy while still sharing most of the work). Sources whose file-local names (anonymous
# namespaces, statics) clash with another file of the same target are compiled on their own below;
# a new clash shows as a redefinition error in the unity build: add the file to the list.
option(MEL_UNITY_BUILD "Compile each target as a few unity translation units (faster full builds)"
       OFF)
set(MEL_UNITY_BATCHES 2 CACHE STRING "Unity translation units per target (MEL_UNITY_BUILD)")

if(MEL_UNITY_BUILD)
  # Files compiled on their own: mostly those whose file-local names clash with another file of
  # their target (the names, and that file).
  set(_mel_unity_alone
      core/ops_index.cpp           # upcast (ops_elementwise.cpp)
      core/ops_norm.cpp            # ptr_or_null (ops_conv.cpp)
      mel/failure.cpp              # Head
      # not a clash: in a unity file g++ 12 at -O3 inlines more of joint_loss() and warns
      # (wrongly) that std::vector<uint8_t>(K) may ask for more than the maximum object size
      mel/joint_loss.cpp
      tests/train/test_trainer.cpp # TempDir, read_text (test_checkpoint_commit.cpp)
      tests/app/test_placed.cpp    # small_mel (test_mel_train.cpp)
      tests/app/test_train.cpp)    # small_config
  list(TRANSFORM _mel_unity_alone PREPEND ${PROJECT_SOURCE_DIR}/)

  # mel_unity(<target>...): unity build in MEL_UNITY_BATCHES files per target. Only .cpp sources
  # are combined (never the CUDA ones, nor a .cu compiled as C++).
  function(mel_unity)
    foreach(target IN LISTS ARGN)
      if(NOT TARGET ${target})
        continue()
      endif()
      get_target_property(dir ${target} SOURCE_DIR)
      get_target_property(srcs ${target} SOURCES)
      set(n 0)
      foreach(src IN LISTS srcs)
        cmake_path(ABSOLUTE_PATH src BASE_DIRECTORY ${dir} NORMALIZE OUTPUT_VARIABLE abs)
        if(NOT abs MATCHES "\\.cpp$" OR abs IN_LIST _mel_unity_alone)
          set_source_files_properties(${src} DIRECTORY ${dir} PROPERTIES
                                      SKIP_UNITY_BUILD_INCLUSION ON)
        else()
          math(EXPR n "${n} + 1")
        endif()
      endforeach()
      if(n GREATER 1)
        math(EXPR batch "(${n} + ${MEL_UNITY_BATCHES} - 1) / ${MEL_UNITY_BATCHES}")
        set_target_properties(${target} PROPERTIES UNITY_BUILD ON UNITY_BUILD_MODE BATCH
                                                   UNITY_BUILD_BATCH_SIZE ${batch})
      endif()
    endforeach()
  endfunction()

  # Not mel_kernels: its CPU kernels include few headers and spend their time in vectorising
  # loops, which a unity file does not share (and its CUDA files are compiled one by one anyway).
  mel_unity(mel_core mel_nn mel_data mel_dist mel_train mel_method mel_app)
  mel_unity(test_kernels test_core test_nn test_data test_dist test_train test_mel test_app
            test_onnx)
  get_directory_property(_mel_subdirs SUBDIRECTORIES)
  if("${PROJECT_SOURCE_DIR}/fuzz" IN_LIST _mel_subdirs)
    get_property(_mel_fuzz_targets DIRECTORY fuzz PROPERTY BUILDSYSTEM_TARGETS)
    mel_unity(${_mel_fuzz_targets})
  endif()
endif()
